// A real OpenID Connect provider (the certified npm package `oidc-provider`) for the end-to-end
// tests: plain HTTP on loopback, issuer `http://127.0.0.1:<port>`, configured entirely from a
// JSON file (path in argv[2], or in $OIDC_PROVIDER_CONFIG). Started by tests/src/oidc_provider.rs;
// the JSON format is described there and in README.md next to this file.
//
// Prints exactly one line `ready <issuer>` on stdout once it listens; everything else (the
// provider's development warnings, errors) goes to stderr. Exits with status 0 on SIGTERM/SIGINT,
// and, when the config says `exit_on_stdin_close`, when its stdin closes (so a test process
// killed with SIGKILL does not leave the provider behind).

import * as crypto from 'node:crypto';
import * as fs from 'node:fs';

import Provider from 'oidc-provider';

const configPath = process.argv[2] ?? process.env.OIDC_PROVIDER_CONFIG;
if (!configPath) {
  console.error('usage: node provider.mjs <config.json> (or set OIDC_PROVIDER_CONFIG)');
  process.exit(2);
}
const config = JSON.parse(fs.readFileSync(configPath, 'utf8'));

const host = config.host ?? '127.0.0.1';
const port = config.port;
if (!Number.isInteger(port) || port <= 0) {
  console.error(`config: "port" must be a positive integer, got ${JSON.stringify(port)}`);
  process.exit(2);
}
const issuer = config.issuer ?? `http://${host}:${port}`;

// --- accounts ----------------------------------------------------------------------------------
// users: { "<account id>": { email, email_verified, name, preferred_username, groups, ... } }
// The account id is what is typed at the login form and is the `sub` claim.
const users = new Map(Object.entries(config.users ?? {}));
for (const [id, claims] of users) {
  if (claims.sub !== undefined && claims.sub !== id) {
    console.error(`config: users.${id}.sub must be absent or equal to the account id "${id}"`);
    process.exit(2);
  }
}

async function findAccount(_ctx, id) {
  const claims = users.get(id);
  if (!claims) {
    return undefined;
  }
  return {
    accountId: id,
    // oidc-provider filters these by the granted scopes/claims (see `claims` below).
    async claims() {
      return { ...claims, sub: id };
    },
  };
}

// --- clients -----------------------------------------------------------------------------------
// Any client metadata oidc-provider knows may be given; these are the defaults.
const clients = (config.clients ?? []).map((client) => ({
  grant_types: ['authorization_code', 'refresh_token'],
  response_types: ['code'],
  token_endpoint_auth_method: 'client_secret_basic',
  post_logout_redirect_uris: [],
  ...client,
}));

// --- time to live of each artifact, in seconds ---------------------------------------------------
const ttl = {
  AccessToken: 600,
  AuthorizationCode: 60,
  IdToken: 600,
  RefreshToken: 24 * 60 * 60,
  Session: 24 * 60 * 60,
  Grant: 24 * 60 * 60,
  Interaction: 10 * 60,
  ...(config.ttl ?? {}),
};

// --- keys: fresh ones on every start ------------------------------------------------------------
const { privateKey } = crypto.generateKeyPairSync('rsa', { modulusLength: 2048 });
const signingKey = {
  ...privateKey.export({ format: 'jwk' }),
  kid: crypto.randomBytes(8).toString('hex'),
  alg: 'RS256',
  use: 'sig',
};

function escapeHtml(value) {
  return String(value).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

const autoConsent = config.auto_consent ?? true;
const autoSubmitLogout = config.auto_submit_logout ?? true;

// The logout confirmation page. Its form posts `xsrf` and `logout=yes` to /session/end/confirm;
// with auto_submit_logout (default) a script submits it on load, so a browser needs no click.
// A client without JavaScript (reqwest) reads the `xsrf` value and posts the form itself.
async function logoutSource(ctx, form) {
  const action = ctx.oidc.urlFor('end_session_confirm');
  const xsrf = /name="xsrf" value="([^"]*)"/.exec(form)?.[1] ?? '';
  const script = autoSubmitLogout
    ? "<script>document.addEventListener('DOMContentLoaded', function () { document.forms[0].submit() });</script>"
    : '';
  ctx.body = `<!DOCTYPE html>
<html>
<head>
  <meta charset="utf-8">
  <title>Logout Request</title>
  ${script}
</head>
<body>
  <h1>Do you want to sign-out from ${escapeHtml(ctx.host)}?</h1>
  <form id="op.logoutForm" method="post" action="${escapeHtml(action)}">
    <input type="hidden" name="xsrf" value="${escapeHtml(xsrf)}"/>
    <input type="hidden" name="logout" value="yes"/>
    <button autofocus type="submit">Yes, sign me out</button>
  </form>
</body>
</html>`;
}

async function postLogoutSuccessSource(ctx) {
  ctx.body = '<!DOCTYPE html><html><head><meta charset="utf-8"><title>Sign-out Success</title></head><body><h1>Sign-out Success</h1></body></html>';
}

// Errors shown to the browser (bad authorization request, bad logout request...) name the error
// and its description, so a test that hits one sees why in the response body.
async function renderError(ctx, out) {
  ctx.type = 'html';
  ctx.body = `<!DOCTYPE html><html><head><meta charset="utf-8"><title>oops! something went wrong</title></head><body>
${Object.entries(out).map(([key, value]) => `<pre><strong>${key}</strong>: ${escapeHtml(value)}</pre>`).join('\n')}
</body></html>`;
}

const provider = new Provider(issuer, {
  clients,
  findAccount,
  jwks: { keys: [signingKey] },
  cookies: { keys: [crypto.randomBytes(32).toString('base64url')] },

  scopes: ['openid', 'offline_access', 'email', 'profile', 'groups'],
  claims: config.claims ?? {
    openid: ['sub'],
    email: ['email', 'email_verified'],
    profile: ['name', 'preferred_username', 'given_name', 'family_name', 'locale', 'picture'],
    groups: ['groups'],
  },
  // Put the claims of the granted scopes into the ID token too (not only at userinfo).
  conformIdTokenClaims: false,

  pkce: { required: () => true },

  // A refresh token for every code exchange by a client allowed the refresh_token grant, not only
  // when offline_access was requested (oidc-provider drops offline_access unless prompt=consent).
  // Without offline_access, the refresh token is bound to the provider session: logging out at
  // the provider (or the session expiring) makes it fail with invalid_grant.
  issueRefreshToken: async (_ctx, client) => client.grantTypeAllowed('refresh_token'),
  rotateRefreshToken: config.rotate_refresh_tokens ?? true,

  // No consent screen for our clients: the grant is created or extended with every requested
  // OIDC scope and claim. (prompt=consent still shows the devInteractions consent form.)
  loadExistingGrant: async (ctx) => {
    const { Grant } = ctx.oidc.provider;
    const grantId = ctx.oidc.result?.consent?.grantId
      || ctx.oidc.session.grantIdFor(ctx.oidc.client.clientId);
    let grant = grantId ? await Grant.find(grantId) : undefined;
    if (!autoConsent) {
      return grant;
    }
    grant ||= new Grant({
      clientId: ctx.oidc.client.clientId,
      accountId: ctx.oidc.session.accountId,
    });
    const scopes = [...ctx.oidc.requestParamOIDCScopes];
    if (scopes.length) {
      grant.addOIDCScope(scopes.join(' '));
    }
    const claims = [...ctx.oidc.requestParamClaims];
    if (claims.length) {
      grant.addOIDCClaims(claims);
    }
    await grant.save();
    return grant;
  },

  ttl,
  // oidc-provider accepts opaque access tokens (userinfo, introspection) up to clockTolerance
  // seconds after they expire (default 15). Same clock on loopback: 0, so TTLs are exact.
  clockTolerance: config.clock_tolerance ?? 0,

  features: {
    devInteractions: { enabled: true },
    rpInitiatedLogout: { enabled: true, logoutSource, postLogoutSuccessSource },
    revocation: { enabled: true },
    introspection: { enabled: true },
    claimsParameter: { enabled: true },
    ...(config.features ?? {}),
  },
  renderError,
});

// Errors the tests may want to see (in the provider's stderr, which the Rust handle keeps).
for (const event of ['server_error', 'grant.error', 'authorization.error', 'end_session.error', 'revocation.error']) {
  provider.on(event, (_ctx, err) => {
    const detail = err?.error_description ? ` (${err.error_description})` : '';
    const cause = err?.cause ? ` cause: ${err.cause.message ?? err.cause}` : '';
    console.error(`oidc-provider ${event}: ${err?.message ?? err}${detail}${cause}`);
  });
}

const server = provider.listen(port, host, () => {
  process.stdout.write(`ready ${issuer}\n`);
});
server.on('error', (err) => {
  console.error(`listen on ${host}:${port} failed: ${err.message}`);
  process.exit(1);
});

function shutdown() {
  server.close();
  server.closeAllConnections();
  process.exit(0);
}
process.on('SIGTERM', shutdown);
process.on('SIGINT', shutdown);
if (config.exit_on_stdin_close) {
  process.stdin.on('end', shutdown);
  process.stdin.on('close', shutdown);
  process.stdin.resume();
}
