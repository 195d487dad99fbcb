//! Connector plugins: one type implementing [`Connector`], exported with
//! [`export_connector_plugin!`](crate::export_connector_plugin), decodes a
//! tool's webhook deliveries, polls its API and performs its actions.

use serde::de::DeserializeOwned;

use crate::{Action, ActionOutcome, PluginError};

#[doc(hidden)]
pub mod bindings {
    // A connector plugin's component fits the `connector-plugin` world: it
    // exports `connector` and `action`. Generating that world here would
    // define the `action` export macros a second time in this crate, so this
    // world exports `connector` alone; `export_connector_plugin!` invokes
    // both export macros, and the component gets both exports. The imports
    // reuse the action bindings: one `PluginError`, one `http::Request`.
    wit_bindgen::generate!({
        inline: "
            package converge:plugin-sdk;

            world connector-exports {
                import converge:plugin/host@0.1.0;
                import converge:plugin/http@0.1.0;
                export converge:plugin/connector@0.1.0;
            }
        ",
        path: "../wit",
        world: "converge:plugin-sdk/connector-exports",
        pub_export_macro: true,
        export_macro_name: "__export_connector_bindings",
        default_bindings_module: "converge_plugin_sdk::connector::bindings",
        additional_derives: [PartialEq],
        with: {
            "converge:plugin/types@0.1.0": crate::bindings::converge::plugin::types,
            "converge:plugin/host@0.1.0": crate::bindings::converge::plugin::host,
            "converge:plugin/http@0.1.0": crate::bindings::converge::plugin::http,
        },
    });
}

pub use bindings::exports::converge::plugin::connector::{ConnectorInfo, Inbound, PollResult};

/// What a connector plugin implements. Only [`Connector::info`] is
/// required: a plugin that does not poll, decode or act leaves the default,
/// which refuses the call as a configuration mistake (`invalid-input`).
pub trait Connector {
    /// What the plugin offers; read once when the daemon loads it.
    fn info() -> ConnectorInfo;

    /// One webhook delivery to canonical events (CloudEvent JSON strings).
    fn decode(inbound: Inbound) -> Result<Vec<String>, PluginError> {
        let _ = inbound;
        Err(unsupported("decode webhook deliveries"))
    }

    /// One page of the tool's changes after `cursor`.
    fn poll(cursor: Option<String>) -> Result<PollResult, PluginError> {
        let _ = cursor;
        Err(unsupported("poll"))
    }

    /// One action on the tool (create a task, comment, move, assign).
    fn execute(action: Action) -> Result<ActionOutcome, PluginError> {
        let _ = action;
        Err(unsupported("perform actions"))
    }
}

fn unsupported(what: &str) -> PluginError {
    PluginError::InvalidInput(format!("this plugin does not {what}"))
}

/// Exports a type implementing [`Connector`] as the plugin's `connector` and
/// `action` interfaces (world `connector-plugin`). Use once per plugin
/// crate, at its root.
#[macro_export]
macro_rules! export_connector_plugin {
    ($plugin:ty) => {
        #[doc(hidden)]
        struct __ConvergeConnectorExports;

        impl $crate::connector::bindings::exports::converge::plugin::connector::Guest
            for __ConvergeConnectorExports
        {
            fn describe() -> $crate::connector::ConnectorInfo {
                <$plugin as $crate::connector::Connector>::info()
            }

            fn decode(
                request: $crate::connector::Inbound,
            ) -> ::core::result::Result<::std::vec::Vec<::std::string::String>, $crate::PluginError>
            {
                <$plugin as $crate::connector::Connector>::decode(request)
            }

            fn poll(
                cursor: ::core::option::Option<::std::string::String>,
            ) -> ::core::result::Result<$crate::connector::PollResult, $crate::PluginError> {
                <$plugin as $crate::connector::Connector>::poll(cursor)
            }
        }

        impl $crate::ActionPlugin for __ConvergeConnectorExports
        {
            fn describe() -> $crate::PluginInfo {
                $crate::plugin_info!()
            }

            fn execute(
                action: $crate::Action,
            ) -> ::core::result::Result<$crate::ActionOutcome, $crate::PluginError> {
                <$plugin as $crate::connector::Connector>::execute(action)
            }
        }

        $crate::bindings::__export_action_plugin_bindings!(
            __ConvergeConnectorExports with_types_in $crate::bindings
        );
        $crate::connector::bindings::__export_connector_bindings!(
            __ConvergeConnectorExports with_types_in $crate::connector::bindings
        );
    };
}

impl ConnectorInfo {
    /// Info listing the event types the plugin produces; add what it does
    /// with [`ConnectorInfo::decodes`], [`ConnectorInfo::polls`] and
    /// [`ConnectorInfo::actions`].
    pub fn new(event_types: &[&str]) -> Self {
        ConnectorInfo {
            decodes: false,
            polls: false,
            event_types: event_types.iter().map(|t| (*t).to_owned()).collect(),
            actions: Vec::new(),
        }
    }

    pub fn decodes(mut self) -> Self {
        self.decodes = true;
        self
    }

    pub fn polls(mut self) -> Self {
        self.polls = true;
        self
    }

    pub fn actions(mut self, actions: &[&str]) -> Self {
        self.actions = actions.iter().map(|a| (*a).to_owned()).collect();
        self
    }
}

impl Inbound {
    /// The first header with this name, compared case-insensitively.
    pub fn header(&self, name: &str) -> Option<&str> {
        crate::header(&self.headers, name)
    }

    /// The body parsed as JSON. A body that does not parse is the sender's
    /// mistake and will not parse on retry: `invalid-input`.
    pub fn json<T: serde::de::DeserializeOwned>(&self) -> Result<T, PluginError> {
        serde_json::from_slice(&self.body).map_err(|e| {
            PluginError::InvalidInput(format!(
                "hook {}: body is not the expected JSON: {e}",
                self.hook
            ))
        })
    }
}

impl PollResult {
    /// One page of events with the cursor the next poll starts from.
    pub fn page(events: Vec<String>, cursor: impl Into<String>, more: bool) -> Self {
        PollResult {
            events,
            cursor: Some(cursor.into()),
            more,
            retry_after_ms: None,
        }
    }
}

/// Where a poll starts: `stored`, the cursor text the previous poll
/// returned, or `first` when there is none. Text that does not parse will
/// not parse on retry either: `invalid-input`.
pub fn parse_cursor<C: DeserializeOwned>(stored: Option<&str>, first: C) -> Result<C, PluginError> {
    match stored {
        None => Ok(first),
        Some(text) => serde_json::from_str(text).map_err(|e| {
            PluginError::InvalidInput(format!("poll cursor is not this plugin's: {e}"))
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_poll_starts_from_the_stored_cursor_or_the_first() {
        assert_eq!(parse_cursor::<Vec<u32>>(None, vec![7]).unwrap(), vec![7]);
        assert_eq!(parse_cursor(Some("[3, 4]"), vec![7]).unwrap(), vec![3, 4]);
        assert!(matches!(
            parse_cursor(Some(r#"{"since": "x"}"#), vec![7]),
            Err(PluginError::InvalidInput(m)) if m.starts_with("poll cursor is not this plugin's: ")
        ));
    }
}
