// Cross-checks vectors.json against @aws-sdk/dsql-signer (Node), a third implementation.
// Not part of CI; run by hand:
//   npm install @aws-sdk/dsql-signer && node cross_check_node.mjs [path/to/vectors.json]
// The Node signer sorts all query parameters and signs the host exactly as given, so only
// vectors whose host is already normalised are compared, as maps of parameters.
import { readFileSync } from "node:fs";
import { createRequire } from "node:module";

const require = createRequire(import.meta.url);
const { DsqlSigner } = require("@aws-sdk/dsql-signer");
const file = JSON.parse(readFileSync(process.argv[2] ?? new URL("./vectors.json", import.meta.url), "utf8"));

const RealDate = Date;
function freeze(iso) {
  const t = RealDate.parse(iso);
  globalThis.Date = class extends RealDate {
    constructor(...a) { super(...(a.length ? a : [t])); }
    static now() { return t; }
  };
}

const params = (token) => {
  const [host, q] = token.split("/?");
  return JSON.stringify([host, Object.fromEntries(q.split("&").map((kv) => kv.split("="))) ]
    .map((x) => (typeof x === "object" ? Object.fromEntries(Object.entries(x).sort()) : x)));
};

let compared = 0, skipped = 0, failed = 0;
for (const v of file.vectors) {
  if (v.host !== v.host.toLowerCase() || v.host.includes(":")) { skipped++; continue; }
  freeze(v.at);
  const signer = new DsqlSigner({
    hostname: v.host, region: v.region, expiresIn: v.expires_in,
    credentials: { accessKeyId: v.access_key_id, secretAccessKey: v.secret_access_key, sessionToken: v.session_token ?? undefined },
  });
  const token = v.action === "DbConnectAdmin" ? await signer.getDbConnectAdminAuthToken() : await signer.getDbConnectAuthToken();
  globalThis.Date = RealDate;
  compared++;
  if (params(token) !== params(v.expected)) {
    failed++;
    console.log(`MISMATCH ${v.name}\n  node     ${token}\n  botocore ${v.expected}`);
  }
}
console.log(`@aws-sdk/dsql-signer: ${compared} compared, ${failed} mismatched, ${skipped} skipped (host not normalised)`);
process.exit(failed ? 1 : 0);
