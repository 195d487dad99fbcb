// js-notify: a converge action plugin in JavaScript.
//
// POSTs one JSON message per action to the URL in the route's config,
// through the host's `http` import, and maps the answer to the plugin error
// whose retry policy fits it. Build with `./build.sh` (componentize-js).
//
// Bindings follow jco's conventions: interfaces are imported by their WIT
// name, records are objects with camelCase fields, variants are
// `{ tag, val }`, enums are strings. An export returning `result` returns
// the ok value and throws the error value; an import returning `result`
// throws an error whose `payload` is the error value.

import { log, configJson } from 'converge:plugin/host@0.1.0';
import { send } from 'converge:plugin/http@0.1.0';

// The version of `plugins/wit` this plugin was built against. The host
// checks its major.minor when it loads the plugin.
const API_VERSION = '0.1.0';
const ERROR_BODY_LIMIT = 200;

export const action = {
  describe() {
    return { name: 'js-notify', version: '0.1.0', apiVersion: API_VERSION };
  },

  execute(action) {
    const config = readConfig();
    const decision = JSON.parse(action.decisionJson);
    const text = decision.message ?? `${action.rule} decided ${action.kind}`;
    const body = { text, to: decision.to ?? null, action_id: action.id, plugin: 'js-notify' };
    let response;
    try {
      response = send({
        method: 'post',
        url: config.url,
        headers: [
          ['content-type', 'application/json'],
          ['idempotency-key', action.id],
        ],
        body: new TextEncoder().encode(JSON.stringify(body)),
        credential: config.credential,
      });
    } catch (e) {
      throw httpError(e.payload ?? { tag: 'transport', val: String(e) });
    }
    if (response.status < 200 || response.status > 299) {
      throw errorForStatus(response);
    }
    console.log(`notified ${config.url} for action ${action.id}`);
    log('debug', `POST ${config.url} -> ${response.status}`);
    return { externalId: undefined, summary: `POST ${config.url} -> ${response.status}` };
  },
};

// The route's config; a bad one is `invalid-input`, never retried.
function readConfig() {
  let config;
  try {
    config = JSON.parse(configJson());
  } catch (e) {
    throw { tag: 'invalid-input', val: `config is not JSON: ${e}` };
  }
  const unknown = Object.keys(config).filter((k) => k !== 'url' && k !== 'credential');
  if (unknown.length > 0) {
    throw { tag: 'invalid-input', val: `unknown config keys: ${unknown.join(', ')}` };
  }
  if (typeof config.url !== 'string') {
    throw { tag: 'invalid-input', val: 'config.url: a URL string is required' };
  }
  return config;
}

// The same mapping as the Rust SDK's `http::error_for_status`.
function errorForStatus(response) {
  const status = response.status;
  const text = new TextDecoder().decode(response.body.slice(0, ERROR_BODY_LIMIT)).trim();
  const message = `HTTP ${status}: ${text}`;
  if (status === 429) return { tag: 'rate-limited', val: retryAfterMs(response.headers) };
  if (status === 401 || status === 403) return { tag: 'unauthorized', val: message };
  if (status === 408 || (status >= 500 && status <= 599)) return { tag: 'transient', val: message };
  return { tag: 'permanent', val: message };
}

function retryAfterMs(headers) {
  for (const [name, value] of headers) {
    if (name.toLowerCase() === 'retry-after' && /^\s*\d+\s*$/.test(value)) {
      return Math.min(Number(value) * 1000, 2 ** 32 - 1);
    }
  }
  return undefined;
}

// Timeouts and transport failures may pass; a denied host or an oversized
// body will not.
function httpError(error) {
  switch (error.tag) {
    case 'timeout':
      return { tag: 'transient', val: 'HTTP request timed out' };
    case 'transport':
      return { tag: 'transient', val: `HTTP transport error: ${error.val}` };
    case 'denied':
      return { tag: 'permanent', val: `HTTP request denied by the host: ${error.val}` };
    default:
      return { tag: 'permanent', val: "HTTP request or response body is over the host's size limit" };
  }
}
