//! The walk from a parse tree to [`SqlFacts`].
//!
//! The tree is walked exhaustively (see `walk.rs`); the hooks below pick out
//! what the policy matches on. Statement kinds come from one table
//! ([`kind_of`]) so that a statement type is never silently without a kind.

use std::rc::Rc;

use pg_query::NodeEnum;
use pg_query::ParserOptions;
use pg_query::protobuf::{
    self, CmdType, CopyStmt, CreateFunctionStmt, CreateTableAsStmt, CreateTrigStmt, DeallocateStmt,
    DeleteStmt, DiscardMode, DiscardStmt, DoStmt, DropStmt, ExecuteStmt, FuncCall, GrantRoleStmt,
    GrantStmt, InsertStmt, MergeWhenClause, ObjectType, OnConflictAction, PrepareStmt, RangeVar,
    SelectStmt, UpdateStmt, VacuumStmt, VariableSetKind, VariableSetStmt,
};

use super::walk::{self, Visit};
use super::{SQL_BYTES_MAX, SQL_NESTING_MAX, SqlError, SqlFacts, StatementKind, TableRef, plpgsql};

/// A change to the session's SQL-level prepared statements, in the order the
/// string makes it.
#[derive(Clone, Debug, PartialEq)]
pub(super) enum SessionOp {
    /// `PREPARE name AS body`.
    Prepare { name: String, body: Rc<SqlFacts> },
    /// `EXECUTE name`: runs what `name` was prepared as.
    Execute { name: String },
    /// `DEALLOCATE name`.
    Deallocate { name: String },
    /// `DEALLOCATE ALL`, `DISCARD ALL`.
    DeallocateAll,
}

/// The facts of a string on its own, and what it does to the session's
/// prepared statements.
#[derive(Clone, Debug, PartialEq)]
pub(super) struct Classified {
    /// Facts of the string itself; an `EXECUTE` contributes only its kind and
    /// its parameters here, not the unknown body.
    pub(super) facts: SqlFacts,
    pub(super) ops: Vec<SessionOp>,
    /// The facts depend on the value of a literal (a `DO` body, a function
    /// body, a `set_config` setting name, ...): texts that differ only in
    /// literals may differ in facts, so this text is cached under its exact
    /// form only. Whether a text is literal-sensitive is itself decided by
    /// its structure and identifiers alone (a `DO`, a function name, a
    /// setting name), never by a literal, so texts that normalize alike are
    /// all sensitive or all not.
    pub(super) literal_sensitive: bool,
}

impl Classified {
    /// The facts as seen without the session: an `EXECUTE` makes them unknown.
    pub(super) fn facts(&self) -> SqlFacts {
        let mut facts = self.facts.clone();
        if let Some(name) = self.ops.iter().find_map(|op| match op {
            SessionOp::Execute { name } => Some(name),
            _ => None,
        }) {
            facts.set_unknown(|| {
                format!(
                    "EXECUTE {name}: the prepared statement's body is known only to the session"
                )
            });
        }
        facts
    }
}

/// Parses `sql` and collects its facts.
pub(super) fn classify(sql: &str) -> Result<Classified, SqlError> {
    if sql.len() > SQL_BYTES_MAX {
        return Err(SqlError::TooLong {
            bytes: sql.len(),
            max: SQL_BYTES_MAX,
        });
    }
    let mut c = Collector::new(0);
    let statements = c.parse_and_walk(sql, ParserOptions::DEFAULT, "")?;
    let Collector {
        mut facts,
        ops,
        literal_sensitive,
        ..
    } = c;
    facts.statements = statements;
    Ok(Classified {
        facts,
        ops,
        literal_sensitive,
    })
}

/// Walk state for one string and the strings nested in it.
pub(super) struct Collector {
    pub(super) facts: SqlFacts,
    ops: Vec<SessionOp>,
    /// Text of the top-level statement being walked: the PL/pgSQL parser
    /// wants a whole `CREATE FUNCTION`.
    stmt_text: String,
    /// Nesting of SQL held in strings (DO bodies, function bodies, constant
    /// dynamic EXECUTE).
    depth: u32,
    /// The `VALUES` list that is an INSERT's source: not a SELECT of its own.
    /// Only compared by address, never dereferenced.
    insert_values: Option<*const SelectStmt>,
    /// First error from a nested parse (a `DO` body that does not parse).
    error: Option<SqlError>,
    /// Kinds noted so far, repeats included: a statement that notes none
    /// gets `Other`.
    kinds_noted: u64,
    /// See [`Classified::literal_sensitive`].
    literal_sensitive: bool,
}

impl Collector {
    fn new(depth: u32) -> Self {
        Collector {
            facts: SqlFacts::default(),
            ops: Vec::new(),
            stmt_text: String::new(),
            depth,
            insert_values: None,
            error: None,
            kinds_noted: 0,
            literal_sensitive: false,
        }
    }

    /// Parses `text` with the given grammar and walks every statement in it.
    /// `what` names the text in error messages when it is nested. Returns the
    /// number of top-level statements.
    fn parse_and_walk(
        &mut self,
        text: &str,
        mode: ParserOptions,
        what: &str,
    ) -> Result<u32, SqlError> {
        let parsed = pg_query::parse(text, mode).map_err(|e| parse_error(what, &e))?;
        let mut statements = 0u32;
        for raw in &parsed.protobuf.stmts {
            statements = statements.saturating_add(1);
            let Some(stmt) = raw.stmt.as_deref() else {
                continue;
            };
            let saved =
                std::mem::replace(&mut self.stmt_text, statement_text(text, raw).to_owned());
            let before = self.kinds_noted;
            walk::walk_node(self, stmt);
            if self.kinds_noted == before && !stmt_is_silent(stmt) {
                // Every statement has a kind; one the table above does not
                // know still counts as something.
                self.facts.kinds.insert(StatementKind::Other);
            }
            self.stmt_text = saved;
        }
        match self.error.take() {
            Some(e) => Err(e),
            None => Ok(statements),
        }
    }

    /// Classifies SQL held in a string (a function body, a constant
    /// dynamic `EXECUTE`, a PL/pgSQL expression) into the current facts.
    pub(super) fn nested(&mut self, text: &str, mode: ParserOptions, what: &str) {
        if self.depth >= SQL_NESTING_MAX {
            self.facts.set_unknown(|| {
                format!("{what}: SQL nested in strings deeper than {SQL_NESTING_MAX} levels")
            });
            return;
        }
        let mut sub = Collector::new(self.depth + 1);
        match sub.parse_and_walk(text, mode, what) {
            Ok(_) => self.absorb(sub),
            Err(e) => self.fail(e),
        }
    }

    fn absorb(&mut self, sub: Collector) {
        self.literal_sensitive |= sub.literal_sensitive;
        self.facts.merge(&sub.facts);
        self.ops.extend(sub.ops);
    }

    /// Records an error that makes the whole string fail to classify.
    pub(super) fn fail(&mut self, e: SqlError) {
        if self.error.is_none() {
            self.error = Some(e);
        }
    }

    pub(super) fn kind(&mut self, kind: StatementKind) {
        self.kinds_noted += 1;
        self.facts.kinds.insert(kind);
    }

    pub(super) fn unknown(&mut self, why: impl FnOnce() -> String) {
        self.facts.set_unknown(why);
    }

    pub(super) fn stmt_text(&self) -> &str {
        &self.stmt_text
    }

    fn function(&mut self, name: &[protobuf::Node]) {
        let parts: Vec<&str> = name.iter().filter_map(string_of).collect();
        let Some(last) = parts.last() else { return };
        self.facts.add_function(&last.to_lowercase());
        if parts.len() > 1 {
            self.facts.add_function(&parts.join(".").to_lowercase());
        }
    }

    fn table_from_names(&mut self, names: &[&str]) {
        match names {
            [.., schema, name] => self.facts.add_table(TableRef {
                schema: Some((*schema).to_owned()),
                name: (*name).to_owned(),
            }),
            [name] => self.facts.add_table(TableRef {
                schema: None,
                name: (*name).to_owned(),
            }),
            [] => {}
        }
    }
}

impl Visit for Collector {
    fn enter(&mut self, node: &NodeEnum) -> bool {
        if let Some(kind) = kind_of(node) {
            self.kind(kind);
        }
        true
    }

    fn select_stmt(&mut self, node: &SelectStmt) -> bool {
        let is_insert_values = self.insert_values.is_some_and(|p| std::ptr::eq(p, node));
        if !is_insert_values {
            self.kind(StatementKind::Select);
        }
        if node.into_clause.is_some() {
            // SELECT ... INTO creates a table.
            self.kind(StatementKind::Create);
        }
        true
    }

    fn insert_stmt(&mut self, node: &InsertStmt) -> bool {
        self.kind(StatementKind::Insert);
        if let Some(NodeEnum::SelectStmt(s)) =
            node.select_stmt.as_deref().and_then(|n| n.node.as_ref())
            && !s.values_lists.is_empty()
        {
            self.insert_values = Some(&**s as *const SelectStmt);
        }
        if let Some(oc) = &node.on_conflict_clause
            && oc.action == OnConflictAction::OnconflictUpdate as i32
        {
            self.kind(StatementKind::Update);
        }
        true
    }

    fn update_stmt(&mut self, node: &UpdateStmt) -> bool {
        self.kind(StatementKind::Update);
        if node.where_clause.is_none() {
            self.facts.without_where = true;
        }
        true
    }

    fn delete_stmt(&mut self, node: &DeleteStmt) -> bool {
        self.kind(StatementKind::Delete);
        if node.where_clause.is_none() {
            self.facts.without_where = true;
        }
        true
    }

    fn merge_when_clause(&mut self, node: &MergeWhenClause) -> bool {
        match CmdType::try_from(node.command_type) {
            Ok(CmdType::CmdInsert) => self.kind(StatementKind::Insert),
            Ok(CmdType::CmdUpdate) => self.kind(StatementKind::Update),
            Ok(CmdType::CmdDelete) => self.kind(StatementKind::Delete),
            _ => {}
        }
        true
    }

    fn copy_stmt(&mut self, node: &CopyStmt) -> bool {
        self.kind(StatementKind::Copy);
        if node.is_program {
            self.kind(StatementKind::CopyProgram);
        }
        true
    }

    fn create_table_as_stmt(&mut self, _node: &CreateTableAsStmt) -> bool {
        self.kind(StatementKind::Create);
        true
    }

    fn variable_set_stmt(&mut self, node: &VariableSetStmt) -> bool {
        let kind = VariableSetKind::try_from(node.kind).unwrap_or(VariableSetKind::Undefined);
        let role = is_role_setting(&node.name);
        self.kind(match kind {
            VariableSetKind::VarResetAll => StatementKind::Reset,
            _ if role => StatementKind::SetRole,
            VariableSetKind::VarReset => StatementKind::Reset,
            _ => StatementKind::Set,
        });
        if node.name.eq_ignore_ascii_case(STRING_SYNTAX_SETTING) {
            self.literal_sensitive = true;
        }
        if node.name.eq_ignore_ascii_case(STRING_SYNTAX_SETTING)
            && matches!(
                kind,
                VariableSetKind::VarSetValue | VariableSetKind::VarSetMulti
            )
            && !node.args.first().and_then(const_string).is_some_and(is_on)
        {
            self.unknown(string_syntax_changed);
        }
        true
    }

    fn grant_stmt(&mut self, node: &GrantStmt) -> bool {
        self.kind(if node.is_grant {
            StatementKind::Grant
        } else {
            StatementKind::Revoke
        });
        true
    }

    fn grant_role_stmt(&mut self, node: &GrantRoleStmt) -> bool {
        self.kind(if node.is_grant {
            StatementKind::Grant
        } else {
            StatementKind::Revoke
        });
        true
    }

    fn vacuum_stmt(&mut self, node: &VacuumStmt) -> bool {
        self.kind(if node.is_vacuumcmd {
            StatementKind::Vacuum
        } else {
            StatementKind::Analyze
        });
        true
    }

    fn create_stmt(&mut self, _node: &protobuf::CreateStmt) -> bool {
        // Also reached as the base of CREATE FOREIGN TABLE, not through a Node.
        self.kind(StatementKind::Create);
        true
    }

    fn prepare_stmt(&mut self, node: &PrepareStmt) -> bool {
        self.kind(StatementKind::Prepare);
        let mut sub = Collector::new(self.depth);
        sub.stmt_text.clone_from(&self.stmt_text);
        for n in &node.argtypes {
            walk::walk_node(&mut sub, n);
        }
        if let Some(q) = &node.query {
            walk::walk_node(&mut sub, q);
        }
        if let Some(e) = sub.error.take() {
            self.fail(e);
        }
        let body = Rc::new(sub.facts.clone());
        self.absorb(sub);
        self.ops.push(SessionOp::Prepare {
            name: node.name.clone(),
            body,
        });
        false
    }

    fn execute_stmt(&mut self, node: &ExecuteStmt) -> bool {
        self.ops.push(SessionOp::Execute {
            name: node.name.clone(),
        });
        true
    }

    fn deallocate_stmt(&mut self, node: &DeallocateStmt) -> bool {
        self.ops.push(if node.isall || node.name.is_empty() {
            SessionOp::DeallocateAll
        } else {
            SessionOp::Deallocate {
                name: node.name.clone(),
            }
        });
        true
    }

    fn discard_stmt(&mut self, node: &DiscardStmt) -> bool {
        if node.target == DiscardMode::DiscardAll as i32 {
            self.ops.push(SessionOp::DeallocateAll);
        }
        true
    }

    fn do_stmt(&mut self, node: &DoStmt) -> bool {
        self.literal_sensitive = true;
        plpgsql::do_block(self, node);
        true
    }

    fn create_function_stmt(&mut self, node: &CreateFunctionStmt) -> bool {
        self.literal_sensitive = true;
        plpgsql::function_body(self, node);
        true
    }

    fn create_trig_stmt(&mut self, node: &CreateTrigStmt) -> bool {
        // The trigger function runs on every matching write from now on.
        self.function(&node.funcname);
        true
    }

    fn range_var(&mut self, node: &RangeVar) -> bool {
        let schema = (!node.schemaname.is_empty()).then(|| node.schemaname.clone());
        self.facts.add_table(TableRef {
            schema,
            name: node.relname.clone(),
        });
        true
    }

    fn drop_stmt(&mut self, node: &DropStmt) -> bool {
        let kind = ObjectType::try_from(node.remove_type).unwrap_or(ObjectType::Undefined);
        for object in &node.objects {
            let Some(NodeEnum::List(list)) = &object.node else {
                continue;
            };
            let names: Vec<&str> = list.items.iter().filter_map(string_of).collect();
            match kind {
                ObjectType::ObjectTable
                | ObjectType::ObjectView
                | ObjectType::ObjectMatview
                | ObjectType::ObjectForeignTable
                | ObjectType::ObjectSequence
                | ObjectType::ObjectIndex => self.table_from_names(&names),
                // DROP RULE / TRIGGER / POLICY name ON table: the table
                // comes first, the object's own name last.
                ObjectType::ObjectRule | ObjectType::ObjectTrigger | ObjectType::ObjectPolicy => {
                    if let Some((_, table)) = names.split_last() {
                        self.table_from_names(table);
                    }
                }
                _ => {}
            }
        }
        true
    }

    fn func_call(&mut self, node: &FuncCall) -> bool {
        self.function(&node.funcname);
        let Some(name) = node.funcname.last().and_then(string_of) else {
            return true;
        };
        let name = name.to_lowercase();
        let first = node.args.first();
        if LITERAL_READING_FUNCTIONS.contains(&name.as_str()) {
            self.literal_sensitive = true;
        }
        match name.as_str() {
            "set_config" => match first.map(const_string) {
                Some(Some(setting)) if is_role_setting(setting) => {
                    self.kind(StatementKind::SetRole)
                }
                Some(Some(setting)) if setting.eq_ignore_ascii_case(STRING_SYNTAX_SETTING) => {
                    if !node.args.get(1).and_then(const_string).is_some_and(is_on) {
                        self.unknown(string_syntax_changed);
                    }
                }
                Some(Some(_)) | None => {}
                // A computed setting name may be `role`.
                Some(None) => self.unknown(|| "set_config with a computed setting name".to_owned()),
            },
            // These run the query they are given, in this session.
            "query_to_xml" | "query_to_xmlschema" | "query_to_xml_and_xmlschema" | "ts_stat" => {
                match first.map(const_string) {
                    Some(Some(query)) => self.nested(query, ParserOptions::DEFAULT, &name),
                    Some(None) => self.unknown(|| format!("{name} of a computed query")),
                    None => {}
                }
            }
            // These read the table they are given by name.
            "table_to_xml" | "table_to_xmlschema" | "table_to_xml_and_xmlschema" => {
                match first.map(const_string) {
                    Some(Some(table)) => {
                        self.nested(&format!("TABLE {table}"), ParserOptions::DEFAULT, &name)
                    }
                    Some(None) => self.unknown(|| format!("{name} of a computed table name")),
                    None => {}
                }
            }
            // These read every table of a schema or of the database.
            "schema_to_xml"
            | "schema_to_xmlschema"
            | "schema_to_xml_and_xmlschema"
            | "database_to_xml"
            | "database_to_xmlschema"
            | "database_to_xml_and_xmlschema" => {
                self.unknown(|| format!("{name} reads tables that are not named"));
            }
            _ => {}
        }
        true
    }
}

/// With `standard_conforming_strings` off, a backslash escapes a quote in
/// `'...'`, so the server would split a string differently from the parser
/// here (which, like every server since 9.1 by default, has it on): a
/// statement could hide in what is parsed as a literal. Turning it off is
/// therefore an effect that cannot be known.
const STRING_SYNTAX_SETTING: &str = "standard_conforming_strings";

fn string_syntax_changed() -> String {
    "standard_conforming_strings off changes how the server splits strings".to_owned()
}

fn is_on(value: &str) -> bool {
    ["on", "true", "yes", "1"]
        .iter()
        .any(|v| value.eq_ignore_ascii_case(v))
}

/// Functions whose literal arguments the classification reads.
const LITERAL_READING_FUNCTIONS: &[&str] = &[
    "set_config",
    "query_to_xml",
    "query_to_xmlschema",
    "query_to_xml_and_xmlschema",
    "ts_stat",
    "table_to_xml",
    "table_to_xmlschema",
    "table_to_xml_and_xmlschema",
];

/// `role` and `session_authorization` change who the session acts as.
fn is_role_setting(name: &str) -> bool {
    name.eq_ignore_ascii_case("role") || name.eq_ignore_ascii_case("session_authorization")
}

/// The text of one top-level statement; `stmt_len` 0 means "to the end".
fn statement_text<'t>(text: &'t str, raw: &protobuf::RawStmt) -> &'t str {
    let start = usize::try_from(raw.stmt_location).unwrap_or(0);
    let end = match usize::try_from(raw.stmt_len) {
        Ok(0) | Err(_) => text.len(),
        Ok(len) => start.saturating_add(len).min(text.len()),
    };
    text.get(start..end).unwrap_or(text)
}

/// Statements that are only part of another and carry no kind themselves.
fn stmt_is_silent(stmt: &protobuf::Node) -> bool {
    matches!(
        stmt.node,
        Some(NodeEnum::PlassignStmt(_)) | Some(NodeEnum::ReturnStmt(_))
    )
}

pub(super) fn string_of(node: &protobuf::Node) -> Option<&str> {
    match &node.node {
        Some(NodeEnum::String(s)) => Some(&s.sval),
        _ => None,
    }
}

/// The value of a string constant (also through a cast: `'role'::text`).
pub(super) fn const_string(node: &protobuf::Node) -> Option<&str> {
    match &node.node {
        Some(NodeEnum::AConst(c)) => match &c.val {
            Some(protobuf::a_const::Val::Sval(s)) => Some(&s.sval),
            _ => None,
        },
        Some(NodeEnum::TypeCast(t)) => t.arg.as_deref().and_then(const_string),
        _ => None,
    }
}

pub(super) fn parse_error(what: &str, e: &pg_query::Error) -> SqlError {
    let mut msg = match e {
        pg_query::Error::Parse(m) | pg_query::Error::Split(m) | pg_query::Error::Scan(m) => {
            m.clone()
        }
        // The parse tree is handed over as protobuf, decoded with a nesting
        // limit that keeps the decoder (and the walk) off the stack's end.
        pg_query::Error::Decode(_) => "statement nested too deeply".to_owned(),
        pg_query::Error::Conversion(_) => "NUL byte in SQL text".to_owned(),
        other => other.to_string(),
    };
    if msg.len() > PARSE_ERROR_BYTES_MAX {
        let mut end = PARSE_ERROR_BYTES_MAX;
        while !msg.is_char_boundary(end) {
            end -= 1;
        }
        msg.truncate(end);
        msg.push_str("...");
    }
    if what.is_empty() {
        SqlError::Parse(msg)
    } else {
        SqlError::Parse(format!("{what}: {msg}"))
    }
}

/// Parse errors are shown to clients and audited; the parser's messages are
/// short, but a message quoting the input is cut here.
const PARSE_ERROR_BYTES_MAX: usize = 256;

/// The kind of a statement node, for the kinds that do not depend on the
/// node's fields (those are set in the typed hooks above).
fn kind_of(node: &NodeEnum) -> Option<StatementKind> {
    use StatementKind as K;
    Some(match node {
        NodeEnum::SelectStmt(_)
        | NodeEnum::InsertStmt(_)
        | NodeEnum::UpdateStmt(_)
        | NodeEnum::DeleteStmt(_)
        | NodeEnum::CopyStmt(_)
        | NodeEnum::VariableSetStmt(_)
        | NodeEnum::GrantStmt(_)
        | NodeEnum::GrantRoleStmt(_)
        | NodeEnum::VacuumStmt(_)
        | NodeEnum::CreateTableAsStmt(_)
        | NodeEnum::CreateStmt(_) => return None,
        NodeEnum::MergeStmt(_) => K::Merge,

        NodeEnum::CreateAmStmt(_)
        | NodeEnum::CreateCastStmt(_)
        | NodeEnum::CreateConversionStmt(_)
        | NodeEnum::CreateDomainStmt(_)
        | NodeEnum::CreateEnumStmt(_)
        | NodeEnum::CreateEventTrigStmt(_)
        | NodeEnum::CreateExtensionStmt(_)
        | NodeEnum::CreateFdwStmt(_)
        | NodeEnum::CreateForeignServerStmt(_)
        | NodeEnum::CreateForeignTableStmt(_)
        | NodeEnum::CreateFunctionStmt(_)
        | NodeEnum::CreateOpClassStmt(_)
        | NodeEnum::CreateOpFamilyStmt(_)
        | NodeEnum::CreatePlangStmt(_)
        | NodeEnum::CreatePolicyStmt(_)
        | NodeEnum::CreatePublicationStmt(_)
        | NodeEnum::CreateRangeStmt(_)
        | NodeEnum::CreateRoleStmt(_)
        | NodeEnum::CreateSchemaStmt(_)
        | NodeEnum::CreateSeqStmt(_)
        | NodeEnum::CreateStatsStmt(_)
        | NodeEnum::CreateSubscriptionStmt(_)
        | NodeEnum::CreateTableSpaceStmt(_)
        | NodeEnum::CreateTransformStmt(_)
        | NodeEnum::CreateTrigStmt(_)
        | NodeEnum::CreateUserMappingStmt(_)
        | NodeEnum::CreatedbStmt(_)
        | NodeEnum::CompositeTypeStmt(_)
        | NodeEnum::DefineStmt(_)
        | NodeEnum::ImportForeignSchemaStmt(_)
        | NodeEnum::IndexStmt(_)
        | NodeEnum::RuleStmt(_)
        | NodeEnum::ViewStmt(_) => K::Create,

        NodeEnum::AlterCollationStmt(_)
        | NodeEnum::AlterDatabaseRefreshCollStmt(_)
        | NodeEnum::AlterDatabaseSetStmt(_)
        | NodeEnum::AlterDatabaseStmt(_)
        | NodeEnum::AlterDefaultPrivilegesStmt(_)
        | NodeEnum::AlterDomainStmt(_)
        | NodeEnum::AlterEnumStmt(_)
        | NodeEnum::AlterEventTrigStmt(_)
        | NodeEnum::AlterExtensionContentsStmt(_)
        | NodeEnum::AlterExtensionStmt(_)
        | NodeEnum::AlterFdwStmt(_)
        | NodeEnum::AlterForeignServerStmt(_)
        | NodeEnum::AlterFunctionStmt(_)
        | NodeEnum::AlterObjectDependsStmt(_)
        | NodeEnum::AlterObjectSchemaStmt(_)
        | NodeEnum::AlterOpFamilyStmt(_)
        | NodeEnum::AlterOperatorStmt(_)
        | NodeEnum::AlterOwnerStmt(_)
        | NodeEnum::AlterPolicyStmt(_)
        | NodeEnum::AlterPublicationStmt(_)
        | NodeEnum::AlterRoleSetStmt(_)
        | NodeEnum::AlterRoleStmt(_)
        | NodeEnum::AlterSeqStmt(_)
        | NodeEnum::AlterStatsStmt(_)
        | NodeEnum::AlterSubscriptionStmt(_)
        | NodeEnum::AlterSystemStmt(_)
        | NodeEnum::AlterTableMoveAllStmt(_)
        | NodeEnum::AlterTableSpaceOptionsStmt(_)
        | NodeEnum::AlterTableStmt(_)
        | NodeEnum::AlterTsconfigurationStmt(_)
        | NodeEnum::AlterTsdictionaryStmt(_)
        | NodeEnum::AlterTypeStmt(_)
        | NodeEnum::AlterUserMappingStmt(_)
        | NodeEnum::ReassignOwnedStmt(_)
        | NodeEnum::RenameStmt(_) => K::Alter,

        NodeEnum::DropStmt(_)
        | NodeEnum::DropOwnedStmt(_)
        | NodeEnum::DropRoleStmt(_)
        | NodeEnum::DropSubscriptionStmt(_)
        | NodeEnum::DropTableSpaceStmt(_)
        | NodeEnum::DropUserMappingStmt(_)
        | NodeEnum::DropdbStmt(_) => K::Drop,

        NodeEnum::TruncateStmt(_) => K::Truncate,
        NodeEnum::DoStmt(_) => K::Do,
        NodeEnum::CallStmt(_) => K::Call,
        NodeEnum::PrepareStmt(_) => K::Prepare,
        NodeEnum::ExecuteStmt(_) => K::Execute,
        NodeEnum::DeallocateStmt(_) => K::Deallocate,
        NodeEnum::ListenStmt(_) => K::Listen,
        NodeEnum::NotifyStmt(_) => K::Notify,
        NodeEnum::UnlistenStmt(_) => K::Unlisten,
        NodeEnum::ConstraintsSetStmt(_) => K::Set,
        NodeEnum::VariableShowStmt(_) => K::Show,
        NodeEnum::TransactionStmt(_) => K::Transaction,
        NodeEnum::ExplainStmt(_) => K::Explain,
        NodeEnum::LockStmt(_) => K::Lock,
        NodeEnum::CommentStmt(_) => K::Comment,
        NodeEnum::RefreshMatViewStmt(_) => K::Refresh,
        NodeEnum::ReindexStmt(_) => K::Reindex,
        NodeEnum::ClusterStmt(_) => K::Cluster,
        NodeEnum::DiscardStmt(_) => K::Discard,
        NodeEnum::DeclareCursorStmt(_) | NodeEnum::FetchStmt(_) | NodeEnum::ClosePortalStmt(_) => {
            K::Fetch
        }
        NodeEnum::CheckPointStmt(_) => K::Checkpoint,
        NodeEnum::LoadStmt(_) => K::Load,
        NodeEnum::SecLabelStmt(_) => K::Other,
        _ => return None,
    })
}
