//! The `custos` command.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use custos::config::{Config, LogFormat};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Identity-aware data-access appliance for Redis and PostgreSQL.
#[derive(Parser)]
#[command(name = "custos", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

// Parsed once per process; boxing the larger variants would buy nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
enum Command {
    /// Run the appliance.
    Run {
        /// Configuration file (TOML).
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Validate a configuration file; errors name the key and the line.
    CheckConfig {
        /// Configuration file (TOML).
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Development and test tokens, signed with a local key.
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
    /// Read, check and export the audit trail.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
}

/// Where the trail is: `--dir`, or the `[audit]` section of `--config`.
#[derive(clap::Args)]
struct TrailArgs {
    /// The audit folder (`audit.dir`).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Configuration file whose `[audit]` names the folder (and the key).
    #[arg(long, short)]
    config: Option<PathBuf>,
}

impl TrailArgs {
    fn dir(&self) -> Result<PathBuf, String> {
        match (&self.dir, &self.config) {
            (Some(d), _) => Ok(d.clone()),
            (None, Some(c)) => Ok(audit_config(c)?.dir),
            (None, None) => Err("--dir (or --config) is required".into()),
        }
    }
}

fn audit_config(path: &std::path::Path) -> Result<custos::audit::AuditConfig, String> {
    Config::load(path)
        .map_err(|e| e.to_string())?
        .audit
        .ok_or_else(|| format!("{}: no [audit] section", path.display()))
}

#[derive(Subcommand)]
enum AuditCommand {
    /// Check CRCs, chains, sequence gaps and checkpoint signatures; exit 1
    /// at the first problem, naming the file and the offset.
    Verify {
        #[command(flatten)]
        trail: TrailArgs,
        /// The public key auditors were given (`custos audit pubkey`).
        #[arg(long, conflicts_with = "key")]
        pubkey: Option<PathBuf>,
        /// The signing key itself (its public half is used).
        #[arg(long)]
        key: Option<PathBuf>,
    },
    /// Print one session as a transcript.
    Replay {
        #[command(flatten)]
        trail: TrailArgs,
        /// Session id, as `search` prints it.
        session: String,
        /// Keep printing as records arrive, until the session ends.
        #[arg(long)]
        follow: bool,
    },
    /// Print matching records as JSON lines.
    Search {
        #[command(flatten)]
        trail: TrailArgs,
        /// Subject.
        #[arg(long)]
        subject: Option<String>,
        /// One of the subject's groups.
        #[arg(long)]
        group: Option<String>,
        /// Target name.
        #[arg(long)]
        target: Option<String>,
        /// Session id.
        #[arg(long)]
        session: Option<String>,
        /// Record kind (command, block, auth_fail, session_start, ...; `reply`
        /// finds only replies written apart from their command).
        #[arg(long)]
        kind: Option<String>,
        /// allow, block or approve.
        #[arg(long)]
        decision: Option<String>,
        /// From (RFC 3339, a date, or Unix seconds), inclusive.
        #[arg(long)]
        since: Option<String>,
        /// Until (RFC 3339, a date, or Unix seconds), exclusive.
        #[arg(long)]
        until: Option<String>,
    },
    /// Write every record to standard output for a SIEM.
    Export {
        #[command(flatten)]
        trail: TrailArgs,
        /// json, ocsf or cef.
        #[arg(long, default_value = "json")]
        format: String,
    },
    /// Print the public key of the audit signing key, for auditors.
    Pubkey {
        /// The signing key (PKCS#8 PEM).
        #[arg(long, conflicts_with = "config")]
        key: Option<PathBuf>,
        /// Configuration file whose `[audit] signing_key` to read.
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
}

fn audit_command(cmd: AuditCommand) -> Result<(), String> {
    use custos::audit::{export, replay, search, sign, verify};
    let stdout = std::io::stdout();
    match cmd {
        AuditCommand::Verify { trail, pubkey, key } => {
            let dir = trail.dir()?;
            let pinned = match (pubkey, key, &trail.config) {
                (Some(p), _, _) => Some(sign::parse_public(
                    &std::fs::read_to_string(&p).map_err(|e| format!("{}: {e}", p.display()))?,
                )?),
                (None, Some(k), _) => Some(sign::SigningKey::load(&k)?.public()),
                (None, None, Some(c)) => {
                    Some(sign::SigningKey::load(&audit_config(c)?.signing_key)?.public())
                }
                (None, None, None) => None,
            };
            match verify::verify(&dir, pinned) {
                Ok(r) => {
                    println!(
                        "ok: {} chains, {} segments, {} records, {} checkpoints; signed by {}{}",
                        r.chains,
                        r.segments,
                        r.records,
                        r.checkpoints,
                        r.key.as_deref().unwrap_or("(no checkpoint)"),
                        if r.pinned {
                            ""
                        } else {
                            " (the key found in the trail; pass --pubkey to check it is the appliance's)"
                        }
                    );
                    if r.unsigned_tail > 0 {
                        println!(
                            "note: {} records follow the last checkpoint of their chain and are not signed yet",
                            r.unsigned_tail
                        );
                    }
                    Ok(())
                }
                Err(p) => Err(format!("verify: {p}")),
            }
        }
        AuditCommand::Replay {
            trail,
            session,
            follow,
        } => {
            let id = search::parse_session(&session)?;
            replay::replay(&trail.dir()?, id, follow, &mut stdout.lock()).map(drop)
        }
        AuditCommand::Search {
            trail,
            subject,
            group,
            target,
            session,
            kind,
            decision,
            since,
            until,
        } => {
            let filter = search::Filter {
                subject,
                group,
                target,
                session: session.as_deref().map(search::parse_session).transpose()?,
                kind: kind
                    .as_deref()
                    .map(|k| {
                        custos::audit::Kind::from_name(k)
                            .ok_or_else(|| format!("unknown kind {k:?}"))
                    })
                    .transpose()?,
                decision: decision
                    .as_deref()
                    .map(|d| {
                        custos::audit::Decision::from_name(d).ok_or_else(|| {
                            format!("unknown decision {d:?}: allow, block or approve")
                        })
                    })
                    .transpose()?,
                since_ns: since.as_deref().map(search::parse_time).transpose()?,
                until_ns: until.as_deref().map(search::parse_time).transpose()?,
            };
            search::search(&trail.dir()?, &filter, &mut stdout.lock()).map(drop)
        }
        AuditCommand::Export { trail, format } => {
            let format = export::Format::parse(&format)?;
            export::export(&trail.dir()?, format, &mut stdout.lock()).map(drop)
        }
        AuditCommand::Pubkey { key, config } => {
            let path = match (key, config) {
                (Some(k), _) => k,
                (None, Some(c)) => audit_config(&c)?.signing_key,
                (None, None) => return Err("--key (or --config) is required".into()),
            };
            println!("{}", sign::SigningKey::load(&path)?.public_text());
            Ok(())
        }
    }
}

#[derive(Subcommand)]
enum TokenCommand {
    /// Sign a token and print it.
    Mint {
        /// PEM private key (PKCS#8, or PKCS#1 for RSA).
        #[arg(long)]
        key: PathBuf,
        /// Subject (`sub`).
        #[arg(long)]
        sub: String,
        /// Groups, comma-separated.
        #[arg(long, value_delimiter = ',')]
        groups: Vec<String>,
        /// Lifetime: 90s, 15m, 1h, 1h30m.
        #[arg(long, default_value = "15m")]
        ttl: String,
        /// Issuer (`iss`); defaults to the `[identity]` issuer of --config.
        #[arg(long)]
        iss: Option<String>,
        /// Audience (`aud`); defaults to the `[identity]` audience of --config.
        #[arg(long)]
        aud: Option<String>,
        /// Key id; the key's RFC 7638 thumbprint by default.
        #[arg(long)]
        kid: Option<String>,
        /// Algorithm; RS256, ES256, ES384 or EdDSA by key type by default.
        #[arg(long)]
        alg: Option<String>,
        /// An extra claim, key=value (value as JSON when it parses, else a string); repeatable.
        #[arg(long = "claim", value_name = "KEY=VALUE")]
        claims: Vec<String>,
        /// Configuration file whose `[identity]` gives --iss and --aud defaults.
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Print the JWKS holding a private key's public half.
    Jwks {
        /// PEM private key.
        #[arg(long)]
        key: PathBuf,
        /// Key id; the key's RFC 7638 thumbprint by default.
        #[arg(long)]
        kid: Option<String>,
    },
    /// Write a new private key (PEM, mode 0600); RSA keys need `openssl`.
    Keygen {
        /// ed25519, ec (P-256), ec-p384 or rsa.
        #[arg(long = "type", default_value = "ed25519")]
        kind: String,
        /// Where to write the key; an existing file is not overwritten.
        #[arg(long)]
        out: PathBuf,
    },
}

fn token_command(cmd: TokenCommand) -> Result<(), String> {
    use custos::identity::mint;
    let read = |p: &PathBuf| std::fs::read(p).map_err(|e| format!("{}: {e}", p.display()));
    match cmd {
        TokenCommand::Mint {
            key,
            sub,
            groups,
            ttl,
            iss,
            aud,
            kid,
            alg,
            claims,
            config,
        } => {
            let (default_iss, default_aud) = match &config {
                Some(c) => mint::defaults_from_config(c)?,
                None => (None, None),
            };
            let issuer = iss
                .or(default_iss)
                .ok_or("--iss is required (or --config with an [identity] issuer)")?;
            let audience = aud
                .or(default_aud)
                .ok_or("--aud is required (or --config with an [identity] audience)")?;
            let algorithm = alg
                .map(|a| custos::identity::config::parse_algorithm(&a))
                .transpose()?;
            let mut extra = serde_json::Map::new();
            for c in &claims {
                let (k, v) = mint::parse_claim(c)?;
                extra.insert(k, v);
            }
            let opts = mint::MintOptions {
                key_pem: read(&key)?,
                issuer,
                audience,
                subject: sub,
                groups: groups.into_iter().filter(|g| !g.is_empty()).collect(),
                ttl: mint::parse_duration(&ttl)?,
                kid,
                algorithm,
                extra,
            };
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_err(|e| e.to_string())?
                .as_secs();
            println!("{}", mint::mint(&opts, now)?);
            Ok(())
        }
        TokenCommand::Jwks { key, kid } => {
            println!("{}", mint::jwks(&read(&key)?, kid.as_deref())?);
            Ok(())
        }
        TokenCommand::Keygen { kind, out } => {
            let pem = mint::generate_key(&kind)?;
            mint::write_private_key(&out, &pem)?;
            eprintln!("wrote {} ({kind})", out.display());
            Ok(())
        }
    }
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("CUSTOS_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.with_ansi(false).init(),
        LogFormat::Json => builder.json().init(),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Token { command } => match token_command(command) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::FAILURE
            }
        },
        Command::Audit { command } => match audit_command(command) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::FAILURE
            }
        },
        Command::CheckConfig { config } => match Config::load(&config) {
            Ok(c) => {
                println!(
                    "ok: {} target(s), {} shard(s)",
                    c.targets.len(),
                    c.server.workers
                );
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::FAILURE
            }
        },
        Command::Run { config } => {
            let config = match Config::load(&config) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("error: {e}");
                    return ExitCode::FAILURE;
                }
            };
            init_logging(config.server.log_format);
            match custos::runtime::run(config) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!("{e:#}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}
