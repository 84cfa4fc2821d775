//! The `[[mask]]` sections: what the file says ([`RawMask`]) and the
//! compiled rules the sessions apply ([`MaskRule`]).
//!
//! Everything is checked at start with the key and the line: detector
//! names, styles, regular expressions, the hash key, column references. A
//! mask that cannot be built stops the appliance; a silently weaker mask
//! would leak.

use std::path::{Path, PathBuf};

use custos_masking::{Detector, Masker, Scanner, Style};
use serde::Deserialize;
use toml::Spanned;

use super::{ColumnRef, MaskRule};
use crate::config::{ConfigError, Protocol, Target};
use crate::policy::glob::Glob;
use crate::secret::Secret;

/// Shortest accepted hash key: an HMAC key shorter than its output makes
/// the tokens guessable for short values.
pub const HASH_KEY_BYTES_MIN: usize = 32;
/// Most entries in one `columns`, `fields` or `keys` list.
pub const NAMES_MAX: usize = 1024;

/// One `[[mask]]` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawMask {
    target: Option<Spanned<String>>,
    #[serde(default)]
    detectors: Vec<Spanned<String>>,
    #[serde(default)]
    keywords: Vec<Spanned<String>>,
    #[serde(default)]
    patterns: Vec<Spanned<String>>,
    #[serde(default)]
    columns: Vec<Spanned<String>>,
    #[serde(default)]
    fields: Vec<Spanned<String>>,
    #[serde(default)]
    keys: Vec<Spanned<String>>,
    style: Option<Spanned<String>>,
    keep_length: Option<bool>,
    hash_key_file: Option<Spanned<PathBuf>>,
    hash_key_env: Option<Spanned<String>>,
    #[serde(default)]
    except_groups: Vec<String>,
}

/// The name a detector has in the configuration.
pub fn detector_name(d: Detector) -> &'static str {
    match d {
        Detector::PrivateKey => "private_key",
        Detector::Jwt => "jwt",
        Detector::ApiKey => "api_key",
        Detector::AwsAccessKey => "aws_access_key",
        Detector::Iban => "iban",
        Detector::CreditCard => "credit_card",
        Detector::UsSsn => "us_ssn",
        Detector::Email => "email",
        Detector::Phone => "phone",
        Detector::Ipv4 => "ipv4",
        Detector::Ipv6 => "ipv6",
        Detector::Keyword => "keyword",
        Detector::Pattern(_) => "pattern",
    }
}

fn detector_from_name(name: &str) -> Option<Detector> {
    Detector::BUILT_IN
        .into_iter()
        .find(|d| detector_name(*d) == name)
}

/// Checks and compiles the `[[mask]]` sections against the targets.
pub(crate) fn validate(
    path: &Path,
    src: &str,
    base: &Path,
    raws: &[Spanned<RawMask>],
    targets: &[Target],
) -> Result<Vec<MaskRule>, ConfigError> {
    let mut rules = Vec::with_capacity(raws.len());
    for (index, raw) in raws.iter().enumerate() {
        rules.push(validate_one(path, src, base, raw, index, targets)?);
    }
    Ok(rules)
}

fn validate_one(
    path: &Path,
    src: &str,
    base: &Path,
    spanned: &Spanned<RawMask>,
    index: usize,
    targets: &[Target],
) -> Result<MaskRule, ConfigError> {
    let raw = spanned.get_ref();
    let err = |span: std::ops::Range<usize>, key: &str, msg: String| {
        ConfigError::at(path, src, span, &format!("mask.{key}"), msg)
    };

    let target = match &raw.target {
        None => None,
        Some(t) if t.get_ref() == "*" => None,
        Some(t) => match targets.iter().find(|x| &x.name == t.get_ref()) {
            Some(x) => Some((x.name.clone(), x.protocol)),
            None => {
                return Err(err(
                    t.span(),
                    "target",
                    format!("no [[target]] is named {:?}", t.get_ref()),
                ));
            }
        },
    };
    let protocol = target.as_ref().map(|(_, p)| *p);
    if let Some(p) = protocol {
        let wrong = match p {
            Protocol::Redis => raw.columns.first().map(|c| (c.span(), "columns")),
            Protocol::Postgres => raw
                .fields
                .first()
                .map(|f| (f.span(), "fields"))
                .or_else(|| raw.keys.first().map(|k| (k.span(), "keys"))),
        };
        if let Some((span, key)) = wrong {
            return Err(err(
                span,
                key,
                format!("does not apply to a {p} target; this mask names one"),
            ));
        }
    }

    let style = match raw.style.as_ref().map(|s| (s.get_ref().as_str(), s.span())) {
        None | Some(("redact", _)) => Style::Redact {
            keep_length: raw.keep_length.unwrap_or(false),
        },
        Some(("partial", _)) => Style::Partial,
        Some(("null", _)) => Style::Null,
        Some(("hash", span)) => {
            let key = match (&raw.hash_key_file, &raw.hash_key_env) {
                (Some(f), None) => {
                    let file = base.join(f.get_ref());
                    Secret::from_file(&file).map_err(|e| {
                        err(
                            f.span(),
                            "hash_key_file",
                            format!("{}: {e}", file.display()),
                        )
                    })?
                }
                (None, Some(v)) => {
                    Secret::from_env(v.get_ref()).map_err(|e| err(v.span(), "hash_key_env", e))?
                }
                (Some(f), Some(_)) => {
                    return Err(err(
                        f.span(),
                        "hash_key_file",
                        "set either hash_key_file or hash_key_env, not both".into(),
                    ));
                }
                (None, None) => {
                    return Err(err(
                        span,
                        "style",
                        "\"hash\" needs hash_key_file or hash_key_env: tokens must stay \
                         stable across restarts and shards"
                            .into(),
                    ));
                }
            };
            if key.expose().len() < HASH_KEY_BYTES_MIN {
                return Err(err(
                    span,
                    "style",
                    format!("the hash key must be at least {HASH_KEY_BYTES_MIN} bytes"),
                ));
            }
            Style::Hash {
                key: key.expose().to_vec(),
            }
        }
        Some((other, span)) => {
            return Err(err(
                span,
                "style",
                format!("{other:?} is not one of redact, partial, hash, null"),
            ));
        }
    };
    if raw.keep_length.is_some() && !matches!(style, Style::Redact { .. }) {
        return Err(err(
            spanned.span(),
            "keep_length",
            "applies to style \"redact\" only".into(),
        ));
    }
    if matches!(style, Style::Null) && protocol == Some(Protocol::Redis) {
        // Redis has a null too, but a null in place of a string inside an
        // array breaks clients that expect strings; say so instead.
        return Err(err(
            raw.style.as_ref().map_or(spanned.span(), |s| s.span()),
            "style",
            "\"null\" is for PostgreSQL columns; use redact, partial or hash for Redis".into(),
        ));
    }

    let mut builder = Scanner::builder();
    let mut detectors = Vec::with_capacity(raw.detectors.len());
    for d in &raw.detectors {
        let name = d.get_ref().as_str();
        let Some(det) = detector_from_name(name) else {
            let known: Vec<&str> = Detector::BUILT_IN.into_iter().map(detector_name).collect();
            return Err(err(
                d.span(),
                "detectors",
                format!("unknown detector {name:?}; known: {}", known.join(", ")),
            ));
        };
        if !detectors.contains(&det) {
            detectors.push(det);
        }
    }
    builder = builder.detectors(&detectors);
    for k in &raw.keywords {
        builder = builder.keyword(k.get_ref());
    }
    for p in &raw.patterns {
        builder = builder.pattern(p.get_ref().clone());
    }
    let scans = !detectors.is_empty() || !raw.keywords.is_empty() || !raw.patterns.is_empty();
    let scanner = builder.build().map_err(|e| {
        let span = raw
            .patterns
            .first()
            .or(raw.keywords.first())
            .map_or(spanned.span(), |s| s.span());
        err(span, "patterns", e.to_string())
    })?;
    let masker = Masker::new(scanner, style.clone())
        .map_err(|e| err(spanned.span(), "style", e.to_string()))?;

    for (list, key) in [
        (&raw.columns, "columns"),
        (&raw.fields, "fields"),
        (&raw.keys, "keys"),
    ] {
        if list.len() > NAMES_MAX {
            return Err(err(
                list[NAMES_MAX].span(),
                key,
                format!("more than {NAMES_MAX} entries"),
            ));
        }
        if let Some(e) = list.iter().find(|e| e.get_ref().is_empty()) {
            return Err(err(e.span(), key, "an entry is empty".into()));
        }
    }
    let mut columns = Vec::with_capacity(raw.columns.len());
    for c in &raw.columns {
        columns.push(ColumnRef::parse(c.get_ref()).map_err(|e| err(c.span(), "columns", e))?);
    }
    let keys = raw
        .keys
        .iter()
        .map(|k| Glob::new(k.get_ref().as_bytes()))
        .collect();
    let fields = raw
        .fields
        .iter()
        .map(|f| f.get_ref().as_bytes().to_vec().into_boxed_slice())
        .collect();

    if !scans && columns.is_empty() && raw.fields.is_empty() && raw.keys.is_empty() {
        return Err(err(
            spanned.span(),
            "detectors",
            "this mask masks nothing: give detectors, keywords, patterns, columns, fields or keys"
                .into(),
        ));
    }

    Ok(MaskRule {
        index,
        target: target.map(|(name, _)| name),
        masker,
        scans,
        columns,
        fields,
        keys,
        except_groups: raw.except_groups.clone(),
        keywords: raw.keywords.iter().map(|k| k.get_ref().clone()).collect(),
        patterns: raw.patterns.iter().map(|p| p.get_ref().clone()).collect(),
    })
}
