//! What a Redis command is, as the store itself describes it.
//!
//! A [`CommandTable`] is built from the store's own `COMMAND` reply (the
//! same entries as `COMMAND INFO`): names, arity, ACL categories, key
//! specifications and subcommands. Module commands (search, JSON, vector
//! sets) are classified the way the store classifies them, so a rule on
//! `@write` covers `JSON.SET` without anyone listing it. When the store
//! cannot be asked, the appliance uses [`CommandTable::builtin`]: the reply
//! of a plain Redis 7.0 captured into `builtin_commands.resp` by
//! `gen_builtin.sh`, parsed by the same code as a live reply.
//!
//! Look-ups are case-insensitive and do not allocate: the name is
//! upper-cased into a stack buffer and looked up in a hash map.

pub mod fetch;
mod info;
pub mod keys;

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::{Arc, OnceLock};

pub use info::TableError;
pub use keys::{Args, FrameArgs, KeyFinder, Keys};

/// Index of a command (or subcommand) in its [`CommandTable`].
pub type CommandId = u16;

/// Longest command or subcommand name looked up; longer names are unknown.
pub const NAME_BYTES_MAX: usize = 64;

/// Most entries (commands plus subcommands) a table holds.
pub const COMMANDS_MAX: usize = 8192;

/// ACL categories a rule may name, in bit order. The first group is Redis's
/// own; the second the categories of the modules Redis Stack ships, which
/// only exist when the store loaded them.
pub const CATEGORIES: &[&str] = &[
    "keyspace",
    "read",
    "write",
    "set",
    "sortedset",
    "list",
    "hash",
    "string",
    "bitmap",
    "hyperloglog",
    "geo",
    "stream",
    "pubsub",
    "admin",
    "fast",
    "slow",
    "blocking",
    "dangerous",
    "connection",
    "transaction",
    "scripting",
    // Modules.
    "search",
    "json",
    "timeseries",
    "bloom",
    "cuckoo",
    "cms",
    "topk",
    "tdigest",
];

/// A set of ACL categories, one bit per entry of [`CATEGORIES`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Categories(pub u64);

impl Categories {
    /// The bit of category `name` (without `@`, any case).
    pub fn bit(name: &[u8]) -> Option<u8> {
        CATEGORIES
            .iter()
            .position(|c| c.as_bytes().eq_ignore_ascii_case(name))
            .map(|i| i as u8)
    }

    /// Adds category `bit`.
    pub fn insert(&mut self, bit: u8) {
        self.0 |= 1 << bit;
    }

    /// Whether any category is in both sets.
    #[inline]
    pub fn intersects(self, other: Categories) -> bool {
        self.0 & other.0 != 0
    }

    /// The names in the set, for logs.
    pub fn names(self) -> impl Iterator<Item = &'static str> {
        CATEGORIES
            .iter()
            .enumerate()
            .filter(move |(i, _)| self.0 & (1 << i) != 0)
            .map(|(_, n)| *n)
    }
}

/// One command or subcommand.
#[derive(Debug, Clone)]
pub struct CommandInfo {
    /// Upper-case name; a subcommand is `CONTAINER|SUB`, as Redis writes it.
    pub name: Box<str>,
    /// Arity as Redis gives it: exact when positive, minimum when negative.
    pub arity: i32,
    /// ACL categories.
    pub categories: Categories,
    /// How to find the keys among the arguments.
    pub keys: KeyFinder,
    /// The container of a subcommand.
    pub parent: Option<CommandId>,
    /// Whether this command has subcommands.
    pub container: bool,
}

/// Where a table came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TableSource {
    /// The store answered `COMMAND`.
    Upstream,
    /// The captured table of a plain Redis 7.0.
    Builtin,
}

/// FNV-1a: command names are short and chosen by clients, but the table is
/// read-only and a collision costs only a longer probe, so a keyed hash
/// would buy nothing here.
#[derive(Default)]
pub struct Fnv(u64);

impl Hasher for Fnv {
    #[inline]
    fn finish(&self) -> u64 {
        self.0
    }

    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        let mut h = if self.0 == 0 {
            0xcbf2_9ce4_8422_2325
        } else {
            self.0
        };
        for &b in bytes {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        self.0 = h;
    }
}

/// Every command the store knows, by id and by name.
#[derive(Debug)]
pub struct CommandTable {
    commands: Vec<CommandInfo>,
    by_name: HashMap<Box<[u8]>, CommandId, BuildHasherDefault<Fnv>>,
    source: TableSource,
}

/// Upper-cases `name` into `out`; `None` when it does not fit.
#[inline]
fn upper<'a>(name: &[u8], out: &'a mut [u8; NAME_BYTES_MAX * 2 + 1]) -> Option<&'a [u8]> {
    if name.len() > NAME_BYTES_MAX {
        return None;
    }
    for (o, b) in out.iter_mut().zip(name) {
        *o = b.to_ascii_uppercase();
    }
    Some(&out[..name.len()])
}

impl CommandTable {
    /// Builds a table from the entries of a `COMMAND` / `COMMAND INFO`
    /// reply held whole in `reply`.
    pub fn from_reply(reply: &[u8], source: TableSource) -> Result<CommandTable, TableError> {
        let commands = info::parse(reply)?;
        let mut by_name = HashMap::with_capacity_and_hasher(commands.len(), Default::default());
        for (id, c) in commands.iter().enumerate() {
            by_name.insert(c.name.as_bytes().into(), id as CommandId);
        }
        Ok(CommandTable {
            commands,
            by_name,
            source,
        })
    }

    /// The table of a plain Redis 7.0, for when the store cannot be asked;
    /// parsed once per process.
    pub fn builtin() -> Arc<CommandTable> {
        static REPLY: &[u8] = include_bytes!("builtin_commands.resp");
        static TABLE: OnceLock<Arc<CommandTable>> = OnceLock::new();
        TABLE
            .get_or_init(|| {
                // The capture is part of the source and parsed by a unit
                // test, so this cannot fail in a built appliance.
                Arc::new(
                    CommandTable::from_reply(REPLY, TableSource::Builtin)
                        .expect("the built-in command table parses"),
                )
            })
            .clone()
    }

    /// Where the table came from.
    pub fn source(&self) -> TableSource {
        self.source
    }

    /// Number of entries, subcommands included.
    pub fn len(&self) -> usize {
        self.commands.len()
    }

    /// Whether the table is empty.
    pub fn is_empty(&self) -> bool {
        self.commands.is_empty()
    }

    /// The entry `id`.
    #[inline]
    pub fn get(&self, id: CommandId) -> &CommandInfo {
        &self.commands[id as usize]
    }

    /// All entries, by id.
    pub fn iter(&self) -> impl Iterator<Item = (CommandId, &CommandInfo)> {
        self.commands
            .iter()
            .enumerate()
            .map(|(i, c)| (i as CommandId, c))
    }

    /// The id of a name already in the table's form (upper case,
    /// `CONTAINER|SUB`).
    pub fn id_of(&self, name: &[u8]) -> Option<CommandId> {
        self.by_name.get(name).copied()
    }

    /// Looks up the command named `name` (any case), and its subcommand
    /// `sub` when the command has subcommands and `sub` names one. A
    /// container with a missing or unknown subcommand is the container.
    /// No allocation.
    #[inline]
    pub fn lookup(&self, name: &[u8], sub: Option<&[u8]>) -> Option<CommandId> {
        let mut buf = [0u8; NAME_BYTES_MAX * 2 + 1];
        let key = upper(name, &mut buf)?;
        let id = *self.by_name.get(key)?;
        if !self.commands[id as usize].container {
            return Some(id);
        }
        let Some(sub) = sub else { return Some(id) };
        if sub.len() > NAME_BYTES_MAX {
            return Some(id);
        }
        let n = name.len();
        buf[n] = b'|';
        for (o, b) in buf[n + 1..].iter_mut().zip(sub) {
            *o = b.to_ascii_uppercase();
        }
        Some(
            self.by_name
                .get(&buf[..n + 1 + sub.len()])
                .copied()
                .unwrap_or(id),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_table_knows_redis_7() {
        let t = CommandTable::builtin();
        assert!(t.len() > 300, "{}", t.len());
        let get = t.lookup(b"get", None).unwrap();
        assert_eq!(&*t.get(get).name, "GET");
        let cats: Vec<_> = t.get(get).categories.names().collect();
        assert!(
            cats.contains(&"read") && cats.contains(&"string"),
            "{cats:?}"
        );
        let flush = t.get(t.lookup(b"FlushAll", None).unwrap());
        assert!(
            flush
                .categories
                .intersects(Categories(1 << Categories::bit(b"dangerous").unwrap()))
        );
        let set = t.lookup(b"config", Some(b"set")).unwrap();
        assert_eq!(&*t.get(set).name, "CONFIG|SET");
        let config = t.lookup(b"CONFIG", None).unwrap();
        assert_eq!(t.get(set).parent, Some(config));
        assert_eq!(t.lookup(b"CONFIG", Some(b"nonsense")), Some(config));
        assert_eq!(t.lookup(b"NOSUCHCOMMAND", None), None);
        assert_eq!(t.lookup(&[b'A'; 200], None), None);
        let eval = t.get(t.lookup(b"eval", None).unwrap());
        assert!(
            eval.categories
                .intersects(Categories(1 << Categories::bit(b"scripting").unwrap()))
        );
    }

    #[test]
    fn category_bits_fit_the_mask() {
        assert!(CATEGORIES.len() <= 64);
        assert_eq!(Categories::bit(b"READ"), Some(1));
        assert_eq!(Categories::bit(b"nope"), None);
    }
}
