// The node `oidc-provider` peer of `cxauth-bench peers`: one confidential client, an in-memory
// adapter (a plain Map: the library's quick-start adapter is an LRU of 1,000 entries, which
// evicts live tokens under load), opaque access tokens, userinfo and introspection, rotating
// refresh tokens from the authorization-code flow (dev interactions, driven by the harness over
// HTTP), and a password grant that checks an Argon2id hash at cxauth's parameters (m=19 MiB,
// t=2, p=1) with `@node-rs/argon2`, then issues what a login issues (grant, access and refresh
// token). Written into the work directory by the harness, which runs `node` on it there.
import http from 'node:http';
import Provider, { errors } from 'oidc-provider';
import { hash, verify, Algorithm } from '@node-rs/argon2';

const USER = 'bench-user';
const PASSWORD = process.env.PEER_PASSWORD || 'bench-admin-password-1';
const CLIENT_ID = 'bench';
const CLIENT_SECRET = 'bench-secret-0123456789';
const SCOPE = 'openid offline_access';

const HASH = await hash(PASSWORD, {
  algorithm: Algorithm.Argon2id,
  memoryCost: 19456,
  timeCost: 2,
  parallelism: 1,
});

// Unbounded in-memory store honouring expiry, as the adapter interface asks.
const store = new Map();
const byGrant = new Map();
class MapAdapter {
  constructor(model) { this.model = model; }
  key(id) { return `${this.model}:${id}`; }
  async upsert(id, payload, expiresIn) {
    const key = this.key(id);
    const exp = expiresIn ? Date.now() + expiresIn * 1000 : Infinity;
    store.set(key, { payload, exp });
    if (payload.grantId) {
      let keys = byGrant.get(payload.grantId);
      if (!keys) { keys = new Set(); byGrant.set(payload.grantId, keys); }
      keys.add(key);
    }
    if (this.model === 'Session' && payload.uid) store.set(`SessionUid:${payload.uid}`, { payload: id, exp });
  }
  async find(id) {
    const key = this.key(id);
    const e = store.get(key);
    if (!e) return undefined;
    if (e.exp < Date.now()) { store.delete(key); return undefined; }
    return e.payload;
  }
  async findByUid(uid) {
    const e = store.get(`SessionUid:${uid}`);
    return e ? this.find(e.payload) : undefined;
  }
  async findByUserCode() { return undefined; }
  async consume(id) {
    const e = store.get(this.key(id));
    if (e) e.payload.consumed = Math.floor(Date.now() / 1000);
  }
  async destroy(id) { store.delete(this.key(id)); }
  async revokeByGrantId(grantId) {
    const keys = byGrant.get(grantId);
    if (keys) { keys.forEach((k) => store.delete(k)); byGrant.delete(grantId); }
  }
}

const server = http.createServer();
await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
const { port } = server.address();
const issuer = `http://127.0.0.1:${port}`;

const provider = new Provider(issuer, {
  adapter: MapAdapter,
  clients: [{
    client_id: CLIENT_ID,
    client_secret: CLIENT_SECRET,
    redirect_uris: ['http://127.0.0.1/cb'],
    grant_types: ['authorization_code', 'refresh_token', 'password'],
    response_types: ['code'],
    token_endpoint_auth_method: 'client_secret_post',
  }],
  cookies: { keys: ['bench-cookie-key-0123456789'] },
  features: {
    devInteractions: { enabled: true },
    introspection: { enabled: true },
    userinfo: { enabled: true },
    revocation: { enabled: true },
  },
  rotateRefreshToken: true,
  ttl: {
    AccessToken: 3600,
    AuthorizationCode: 600,
    Grant: 14 * 24 * 3600,
    IdToken: 3600,
    Interaction: 3600,
    RefreshToken: 14 * 24 * 3600,
    Session: 14 * 24 * 3600,
  },
  async findAccount(_ctx, id) {
    return { accountId: id, async claims() { return { sub: id }; } };
  },
});

provider.registerGrantType('password', async (ctx) => {
  const { username, password } = ctx.oidc.params;
  const ok = await verify(HASH, String(password || ''));
  if (!ok || username !== USER) {
    throw new errors.InvalidGrant('invalid credentials');
  }
  const { client } = ctx.oidc;
  const grant = new provider.Grant({ accountId: USER, clientId: client.clientId });
  grant.addOIDCScope(SCOPE);
  const grantId = await grant.save();
  const at = new provider.AccessToken({
    accountId: USER, client, grantId, gty: 'password', scope: SCOPE,
  });
  const rt = new provider.RefreshToken({
    accountId: USER, client, grantId, gty: 'password', scope: SCOPE,
    rotations: 0, iiat: Math.floor(Date.now() / 1000),
  });
  ctx.body = {
    access_token: await at.save(),
    refresh_token: await rt.save(),
    token_type: 'Bearer',
    expires_in: at.expiration,
    scope: SCOPE,
  };
}, ['username', 'password', 'scope']);

server.on('request', provider.callback());
process.on('SIGTERM', () => process.exit(0));
console.error(`cxauth: listening on http://127.0.0.1:${port}`);
