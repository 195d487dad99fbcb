use std::fmt;
use std::str::FromStr;

use crate::error::UnknownScheme;

/// A webhook signature scheme, named in the config as [`Scheme::name`] says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scheme {
    /// `standard-webhooks`: `webhook-id`, `webhook-timestamp` and
    /// `webhook-signature` (`v1,<base64>` entries); `whsec_` base64 secrets.
    StandardWebhooks,
    /// `github`: `X-Hub-Signature-256: sha256=<hex>`, and the legacy
    /// `X-Hub-Signature: sha1=<hex>` when the settings allow it.
    Github,
    /// `jira`: `X-Hub-Signature: sha256=<hex>`, GitHub's construction.
    Jira,
    /// `slack`: `X-Slack-Signature: v0=<hex>` over `v0:<timestamp>:<body>`.
    Slack,
    /// `stripe`: `Stripe-Signature: t=..,v1=..`, key = the secret as written.
    Stripe,
    /// `asana`: `X-Hook-Signature` keyed by the secret of the handshake.
    Asana,
    /// `trello`: `X-Trello-Webhook`, HMAC-SHA1 over body + callback URL.
    Trello,
    /// `linear`: `Linear-Signature`, freshness from the body's `webhookTimestamp`.
    Linear,
    /// `hubspot-v1`: SHA-256 of secret + body (a plain hash).
    HubspotV1,
    /// `hubspot-v2`: SHA-256 of secret + method + URL + body (a plain hash).
    HubspotV2,
    /// `hubspot-v3`: `X-HubSpot-Signature-v3`, HMAC-SHA256 with a timestamp.
    HubspotV3,
    /// `sendgrid`: ECDSA P-256 signature checked with the account's public key.
    Sendgrid,
    /// `hmac-sha256`: HMAC-SHA256 of the body in a configurable header.
    HmacSha256,
    /// `url-secret`: no signature, the secret itself in the URL's query
    /// parameter `key` (Mailchimp's audience webhooks sign nothing and
    /// advise a secret in the callback URL). Weaker than a signature: the
    /// body is not covered, and anything that logs the URL keeps the secret.
    UrlSecret,
    /// `none`: every request is accepted as is.
    None,
}

impl Scheme {
    /// Every scheme, in the order the documentation lists them.
    pub const ALL: [Scheme; 15] = [
        Scheme::StandardWebhooks,
        Scheme::Github,
        Scheme::Jira,
        Scheme::Slack,
        Scheme::Stripe,
        Scheme::Asana,
        Scheme::Trello,
        Scheme::Linear,
        Scheme::HubspotV1,
        Scheme::HubspotV2,
        Scheme::HubspotV3,
        Scheme::Sendgrid,
        Scheme::HmacSha256,
        Scheme::UrlSecret,
        Scheme::None,
    ];

    /// The name used in the config.
    pub fn name(self) -> &'static str {
        match self {
            Scheme::StandardWebhooks => "standard-webhooks",
            Scheme::Github => "github",
            Scheme::Jira => "jira",
            Scheme::Slack => "slack",
            Scheme::Stripe => "stripe",
            Scheme::Asana => "asana",
            Scheme::Trello => "trello",
            Scheme::Linear => "linear",
            Scheme::HubspotV1 => "hubspot-v1",
            Scheme::HubspotV2 => "hubspot-v2",
            Scheme::HubspotV3 => "hubspot-v3",
            Scheme::Sendgrid => "sendgrid",
            Scheme::HmacSha256 => "hmac-sha256",
            Scheme::UrlSecret => "url-secret",
            Scheme::None => "none",
        }
    }

    /// The freshness window the sender documents, for schemes that sign a
    /// timestamp. SendGrid signs one, and Jira's body carries one, but
    /// neither documents a window: they have one only when the settings
    /// give one.
    pub(crate) fn default_tolerance_secs(self) -> Option<u64> {
        match self {
            Scheme::StandardWebhooks | Scheme::Slack | Scheme::Stripe | Scheme::HubspotV3 => {
                Some(300)
            }
            Scheme::Linear => Some(60),
            _ => None,
        }
    }

    /// Whether the scheme signs a timestamp, so that a tolerance means something.
    pub(crate) fn signs_timestamp(self) -> bool {
        self.default_tolerance_secs().is_some() || matches!(self, Scheme::Sendgrid | Scheme::Jira)
    }

    /// Whether the scheme signs the URL the hook was registered with.
    pub(crate) fn signs_url(self) -> bool {
        matches!(self, Scheme::Trello | Scheme::HubspotV2 | Scheme::HubspotV3)
    }
}

impl fmt::Display for Scheme {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Scheme {
    type Err = UnknownScheme;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Scheme::ALL
            .into_iter()
            .find(|scheme| scheme.name() == s)
            .ok_or_else(|| UnknownScheme {
                name: s.to_string(),
            })
    }
}

/// The valid names, for error messages.
pub(crate) fn names() -> String {
    Scheme::ALL.map(Scheme::name).join(", ")
}
