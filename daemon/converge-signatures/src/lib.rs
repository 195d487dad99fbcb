//! Verification of inbound webhook signatures: given the raw request (method,
//! headers, body bytes) and the clock, decide whether a delivery really comes
//! from the sender configured for a hook, and is fresh where the sender signs a
//! timestamp.
//!
//! The set of schemes is closed ([`Scheme`]), named as in the config. A
//! [`Verifier`] is built once from a scheme and its [`Settings`], which is where
//! every configuration mistake is reported; [`Verifier::verify`] then runs per
//! request. The crate is pure: no I/O, no clock of its own (the caller passes
//! `now`), no async.
//!
//! Secrets live in [`Secret`], whose `Debug` prints nothing of them, and no
//! error message carries a secret or a computed signature. Signatures are
//! compared in constant time.

mod error;
mod headers;
mod scheme;
mod schemes;
mod secret;
mod verifier;

pub use error::{ConfigError, Setting, UnknownEncoding, UnknownScheme, VerifyError};
pub use scheme::Scheme;
pub use secret::Secret;
pub use verifier::{Encoding, GenericHmac, Inbound, Settings, Verified, Verifier, asana_handshake};
