//! A development identity provider for the token scenarios: signing keys,
//! the JWKS the appliance trusts, tokens minted with `custos token mint`,
//! hostile tokens built by hand, and an HTTPS server for the JWKS.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use tempfile::TempDir;

use crate::certs::Certs;
use crate::custos::custos_binary;
use crate::net::free_port;
use crate::process::{ChildGuard, run_tool, wait_until};

/// The issuer every token of the provider names.
pub const ISSUER: &str = "https://idp.custos.test/";
/// The audience the appliance expects.
pub const AUDIENCE: &str = "custos";

/// Signing keys and a JWKS file in a temporary folder.
pub struct Idp {
    dir: TempDir,
    keys: Vec<PathBuf>,
}

impl Default for Idp {
    fn default() -> Self {
        Self::new()
    }
}

impl Idp {
    /// A provider with one Ed25519 signing key, published in its JWKS.
    pub fn new() -> Idp {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut idp = Idp {
            dir,
            keys: Vec::new(),
        };
        let key = idp.new_key("key-1");
        idp.publish(&[key]);
        idp
    }

    /// Generates a signing key (not published until [`publish`](Self::publish)).
    pub fn new_key(&mut self, name: &str) -> PathBuf {
        let path = self.dir.path().join(format!("{name}.pem"));
        let out = run_tool(
            Command::new(custos_binary())
                .args(["token", "keygen", "--out"])
                .arg(&path),
            None,
            Duration::from_secs(30),
        );
        out.assert_success("custos token keygen");
        self.keys.push(path.clone());
        path
    }

    /// The first key: the one the appliance trusts from the start.
    pub fn key(&self) -> &Path {
        &self.keys[0]
    }

    /// Writes the JWKS holding the public halves of `keys`.
    pub fn publish(&self, keys: &[PathBuf]) {
        let mut all = Vec::new();
        for key in keys {
            let out = run_tool(
                Command::new(custos_binary())
                    .args(["token", "jwks", "--key"])
                    .arg(key),
                None,
                Duration::from_secs(30),
            );
            out.assert_success("custos token jwks");
            let text = out.stdout;
            let start = text.find('[').expect("keys array") + 1;
            let end = text.rfind(']').expect("keys array");
            all.push(text[start..end].trim().to_string());
        }
        let jwks = format!("{{\"keys\": [{}]}}", all.join(","));
        std::fs::write(self.jwks_path(), jwks).expect("write jwks");
    }

    /// The JWKS file.
    pub fn jwks_path(&self) -> PathBuf {
        self.dir.path().join("jwks.json")
    }

    /// The JWKS as published now.
    pub fn jwks(&self) -> String {
        std::fs::read_to_string(self.jwks_path()).expect("read jwks")
    }

    /// An `[identity]` section trusting the JWKS file, with `extra` lines.
    pub fn section(&self, extra: &str) -> String {
        format!(
            "\n[identity]\nissuer = {ISSUER:?}\naudience = {AUDIENCE:?}\njwks_file = {:?}\n{extra}\n",
            self.jwks_path().display().to_string()
        )
    }

    /// A token for `sub` in `groups`, valid for `ttl` (`90s`, `15m`),
    /// signed with the first key; `claims` are `k=v` overrides.
    pub fn token(&self, sub: &str, groups: &str, ttl: &str, claims: &[&str]) -> String {
        self.token_with(self.key(), sub, groups, ttl, claims)
    }

    /// As [`token`](Self::token), signed with `key`.
    pub fn token_with(
        &self,
        key: &Path,
        sub: &str,
        groups: &str,
        ttl: &str,
        claims: &[&str],
    ) -> String {
        let mut cmd = Command::new(custos_binary());
        cmd.args(["token", "mint", "--key"]).arg(key).args([
            "--sub", sub, "--ttl", ttl, "--iss", ISSUER, "--aud", AUDIENCE,
        ]);
        if !groups.is_empty() {
            cmd.args(["--groups", groups]);
        }
        for c in claims {
            cmd.args(["--claim", c]);
        }
        let out = run_tool(&mut cmd, None, Duration::from_secs(30));
        out.assert_success("custos token mint");
        out.stdout.trim().to_string()
    }
}

/// Splits a token into its three base64url parts.
fn parts(token: &str) -> (String, String, String) {
    let mut it = token.split('.');
    let h = it.next().unwrap_or_default().to_string();
    let p = it.next().unwrap_or_default().to_string();
    let s = it.next().unwrap_or_default().to_string();
    (h, p, s)
}

/// The token's payload with `edit` applied to its JSON text, keeping the
/// original signature (which then no longer matches).
pub fn tampered(token: &str, edit: impl Fn(&str) -> String) -> String {
    let (h, p, s) = parts(token);
    let json = String::from_utf8(B64.decode(p).expect("payload base64")).expect("payload utf-8");
    format!("{h}.{}.{s}", B64.encode(edit(&json)))
}

/// The token's claims under an `alg: none` header and no signature.
pub fn alg_none(token: &str) -> String {
    let (_, p, _) = parts(token);
    format!("{}.{p}.", B64.encode(r#"{"alg":"none","typ":"JWT"}"#))
}

/// The token's claims signed with HS256, the key being `key_text` (the
/// provider's public key, as an attacker who confuses key types would).
pub fn hs256_with(token: &str, kid: &str, key_text: &[u8]) -> String {
    let (_, p, _) = parts(token);
    let header = B64.encode(format!(r#"{{"alg":"HS256","typ":"JWT","kid":"{kid}"}}"#));
    let mut mac = Hmac::<Sha256>::new_from_slice(key_text).expect("hmac key");
    mac.update(format!("{header}.{p}").as_bytes());
    let sig = B64.encode(mac.finalize().into_bytes());
    format!("{header}.{p}.{sig}")
}

/// The `kid` and `x` (public key) of the first key in a JWKS text.
pub fn first_key(jwks: &str) -> (String, String) {
    let field = |name: &str| {
        let at = jwks.find(&format!("\"{name}\"")).expect("field") + name.len() + 2;
        let rest = &jwks[at..];
        let open = rest.find('"').expect("value") + 1;
        let close = rest[open..].find('"').expect("value end") + open;
        rest[open..close].to_string()
    };
    (field("kid"), field("x"))
}

/// An HTTPS server publishing a file (the JWKS) at `/jwks.json`, and the
/// OpenID discovery document naming it. The file is read on every request,
/// so rewriting it rotates the keys.
pub struct JwksServer {
    child: Option<ChildGuard>,
    port: u16,
}

const SERVER: &str = r#"
import http.server, ssl, sys, json
port, cert, key, path, issuer = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5]
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        if self.path == "/jwks.json":
            body = open(path, "rb").read()
        elif self.path == "/.well-known/openid-configuration":
            body = json.dumps({"issuer": issuer, "jwks_uri": "https://localhost:%d/jwks.json" % port}).encode()
        else:
            self.send_response(404); self.end_headers(); return
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a):
        pass
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(cert, key)
srv = http.server.HTTPServer(("127.0.0.1", port), H)
srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
print("ready", flush=True)
srv.serve_forever()
"#;

impl JwksServer {
    /// Serves `idp`'s JWKS over HTTPS with `certs` (for `localhost`).
    pub fn start(idp: &Idp, certs: &Certs) -> JwksServer {
        let port = free_port();
        let mut cmd = Command::new("python3");
        cmd.arg("-c")
            .arg(SERVER)
            .arg(port.to_string())
            .arg(certs.cert())
            .arg(certs.key())
            .arg(idp.jwks_path())
            .arg(ISSUER);
        let child = ChildGuard::spawn("jwks-server", &mut cmd);
        wait_until(Duration::from_secs(20), "the JWKS server listens", || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        JwksServer {
            child: Some(child),
            port,
        }
    }

    /// The JWKS address.
    pub fn url(&self) -> String {
        format!("https://localhost:{}/jwks.json", self.port)
    }

    /// The provider's discovery address.
    pub fn discovery_url(&self) -> String {
        format!(
            "https://localhost:{}/.well-known/openid-configuration",
            self.port
        )
    }

    /// Takes the provider down.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill();
        }
    }
}
