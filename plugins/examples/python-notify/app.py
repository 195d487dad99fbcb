"""python-notify: a converge action plugin in Python.

POSTs one JSON message per action to the URL in the route's config, through
the host's `http` import, and maps the answer to the plugin error whose retry
policy fits it. Build with `./build.sh` (componentize-py).
"""

import json

from wit_world import exports
from componentize_py_types import Err
from wit_world.imports import host, http, types

# The version of `plugins/wit` this plugin was built against. The host checks
# its major.minor when it loads the plugin.
API_VERSION = "0.1.0"
ERROR_BODY_LIMIT = 200


class Action(exports.Action):
    def describe(self) -> types.PluginInfo:
        return types.PluginInfo(name="python-notify", version="0.1.0", api_version=API_VERSION)

    def execute(self, action: types.Action) -> types.ActionOutcome:
        config = read_config()
        decision = json.loads(action.decision_json)
        text = decision.get("message") or f"{action.rule} decided {action.kind}"
        body = {"text": text, "to": decision.get("to"), "action_id": action.id, "plugin": "python-notify"}
        request = http.Request(
            method=http.Method.POST,
            url=config["url"],
            headers=[("content-type", "application/json"), ("idempotency-key", action.id)],
            body=json.dumps(body).encode(),
            credential=config.get("credential"),
        )
        try:
            response = http.send(request)
        except Err as e:
            raise Err(http_error(e.value))
        if not 200 <= response.status < 300:
            raise Err(error_for_status(response))
        print(f"notified {config['url']} for action {action.id}")
        host.log(host.Level.DEBUG, f"POST {config['url']} -> {response.status}")
        return types.ActionOutcome(external_id=None, summary=f"POST {config['url']} -> {response.status}")


def read_config() -> dict:
    """The route's config; a bad one is `invalid-input`, never retried."""
    try:
        config = json.loads(host.config_json())
    except ValueError as e:
        raise Err(types.PluginError_InvalidInput(f"config is not JSON: {e}"))
    unknown = set(config) - {"url", "credential"}
    if unknown:
        raise Err(types.PluginError_InvalidInput(f"unknown config keys: {sorted(unknown)}"))
    if not isinstance(config.get("url"), str):
        raise Err(types.PluginError_InvalidInput("config.url: a URL string is required"))
    return config


def error_for_status(response: http.Response) -> types.PluginError:
    """The same mapping as the Rust SDK's `http::error_for_status`."""
    status = response.status
    message = f"HTTP {status}: {response.body[:ERROR_BODY_LIMIT].decode(errors='replace').strip()}"
    if status == 429:
        return types.PluginError_RateLimited(retry_after_ms(response.headers))
    if status in (401, 403):
        return types.PluginError_Unauthorized(message)
    if status == 408 or 500 <= status <= 599:
        return types.PluginError_Transient(message)
    return types.PluginError_Permanent(message)


def retry_after_ms(headers) -> int | None:
    for name, value in headers:
        if name.lower() == "retry-after" and value.strip().isdigit():
            return min(int(value.strip()) * 1000, 2**32 - 1)
    return None


def http_error(error: http.HttpError) -> types.PluginError:
    """Timeouts and transport failures may pass; a denied host or an oversized body will not."""
    if isinstance(error, http.HttpError_Timeout):
        return types.PluginError_Transient("HTTP request timed out")
    if isinstance(error, http.HttpError_Transport):
        return types.PluginError_Transient(f"HTTP transport error: {error.value}")
    if isinstance(error, http.HttpError_Denied):
        return types.PluginError_Permanent(f"HTTP request denied by the host: {error.value}")
    return types.PluginError_Permanent("HTTP request or response body is over the host's size limit")
