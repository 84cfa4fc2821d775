//! Code held in strings: `DO` blocks and function bodies.
//!
//! A `DO` block is one string to the SQL grammar; what it runs is decided by
//! the PL/pgSQL compiler. The body is compiled with libpg_query's copy of
//! that compiler, and every SQL statement and expression in the result is
//! classified as SQL (PL/pgSQL evaluates every expression as a `SELECT`).
//! `EXECUTE` of a constant string is classified too; `EXECUTE` of a computed
//! string, or a body in another language, cannot be known before it runs.

use pg_query::ParserOptions;
use pg_query::protobuf::{CreateFunctionStmt, DoStmt, Node};
use serde_json::Value;

use super::StatementKind;
use super::classify::{Collector, const_string, parse_error, string_of};

/// Classifies a `DO` block's body into the collector.
pub(super) fn do_block(c: &mut Collector, stmt: &DoStmt) {
    let mut body = None;
    let mut language = None;
    for opt in &stmt.args {
        let Some(pg_query::NodeEnum::DefElem(d)) = &opt.node else {
            continue;
        };
        let arg = d.arg.as_deref();
        match d.defname.as_str() {
            "as" => body = arg.and_then(string_of),
            "language" => language = arg.and_then(string_of),
            _ => {}
        }
    }
    let language = language.unwrap_or("plpgsql");
    if language != "plpgsql" {
        c.unknown(|| format!("DO block in language {language}"));
        return;
    }
    let Some(body) = body else {
        c.unknown(|| "DO block without a body".to_owned());
        return;
    };
    // Rebuilt rather than cut from the query text: the DO may sit in SQL
    // that was itself held in a string.
    let tag = dollar_tag(body);
    let text = format!("DO {tag}{body}{tag}");
    compile(c, &text, "DO block");
}

/// Classifies a function or procedure body into the collector.
pub(super) fn function_body(c: &mut Collector, stmt: &CreateFunctionStmt) {
    let mut body: Option<&[Node]> = None;
    let mut language = None;
    for opt in &stmt.options {
        let Some(pg_query::NodeEnum::DefElem(d)) = &opt.node else {
            continue;
        };
        match (
            d.defname.as_str(),
            d.arg.as_deref().and_then(|n| n.node.as_ref()),
        ) {
            ("as", Some(pg_query::NodeEnum::List(l))) => body = Some(&l.items),
            ("language", Some(pg_query::NodeEnum::String(s))) => language = Some(s.sval.as_str()),
            _ => {}
        }
    }
    // A standard SQL body (BEGIN ATOMIC ... END, RETURN expr) is part of the
    // tree and is walked with it.
    let Some(body) = body else { return };
    match language.unwrap_or("sql") {
        "sql" => match body.first().and_then(string_of) {
            Some(text) => c.nested(text, ParserOptions::DEFAULT, "SQL function body"),
            None => c.unknown(|| "SQL function without a body".to_owned()),
        },
        // The PL/pgSQL compiler needs the declared arguments and result type,
        // so it is given the whole statement.
        "plpgsql" => {
            let text = c.stmt_text().to_owned();
            match pg_query::parse_plpgsql(&text) {
                Ok(tree) => visit(c, &tree, "", ""),
                // The body compiled but the compiler's output could not be
                // read (libpg_query writes invalid JSON for some trigger
                // functions): compile the body alone in a plain function.
                Err(pg_query::Error::InvalidJson(_)) => match body.first().and_then(string_of) {
                    Some(source) => compile_detached(c, source),
                    None => c.unknown(|| "PL/pgSQL function without a body".to_owned()),
                },
                Err(e) => c.fail(parse_error("PL/pgSQL function body", &e)),
            }
        }
        other => c.unknown(|| format!("function body in language {other}")),
    }
}

/// A dollar-quote tag that does not occur in `body`.
fn dollar_tag(body: &str) -> String {
    let mut tag = String::from("$custos$");
    let mut n = 0u32;
    while body.contains(&tag) {
        n += 1;
        tag = format!("$custos{n}$");
    }
    tag
}

/// Compiles `text` (a `DO` or `CREATE FUNCTION` statement) as PL/pgSQL and
/// classifies what the compiled functions run.
fn compile(c: &mut Collector, text: &str, what: &str) {
    match pg_query::parse_plpgsql(text) {
        Ok(tree) => visit(c, &tree, "", ""),
        Err(pg_query::Error::InvalidJson(_)) => {
            c.unknown(|| format!("{what}: compiled, but could not be inspected"))
        }
        Err(e) => c.fail(parse_error(what, &e)),
    }
}

/// Compiles a function body on its own, as the body of a function with no
/// arguments returning `record` (so that `RETURN NEW` compiles) or else
/// `void` (so that a bare `RETURN` does). Names of arguments and trigger
/// variables then read as column references, which the SQL grammar accepts
/// the same way; the statements and calls found are the same.
fn compile_detached(c: &mut Collector, source: &str) {
    let tag = dollar_tag(source);
    for returns in ["record", "void"] {
        let text = format!(
            "CREATE FUNCTION custos_body() RETURNS {returns} LANGUAGE plpgsql AS {tag}{source}{tag}"
        );
        if let Ok(tree) = pg_query::parse_plpgsql(&text) {
            visit(c, &tree, "", "");
            return;
        }
    }
    c.unknown(|| "PL/pgSQL function body: compiled, but could not be inspected".to_owned());
}

/// Walks the compiler's JSON output. `stmt` is the innermost PL/pgSQL node
/// type around `value` and `field` the field of that node that holds it.
fn visit(c: &mut Collector, value: &Value, stmt: &str, field: &str) {
    match value {
        Value::Array(items) => {
            for item in items {
                visit(c, item, stmt, field);
            }
        }
        Value::Object(map) => {
            for (key, inner) in map {
                if key == "PLpgSQL_expr" {
                    expression(c, inner, stmt, field);
                } else if key.starts_with("PLpgSQL_") {
                    statement(c, key);
                    if let Value::Object(fields) = inner {
                        for (f, v) in fields {
                            visit(c, v, key, f);
                        }
                    } else {
                        visit(c, inner, key, "");
                    }
                } else {
                    visit(c, inner, stmt, key);
                }
            }
        }
        _ => {}
    }
}

/// Kinds of PL/pgSQL statements that run SQL without an expression.
fn statement(c: &mut Collector, node: &str) {
    match node {
        "PLpgSQL_stmt_commit" | "PLpgSQL_stmt_rollback" => c.kind(StatementKind::Transaction),
        "PLpgSQL_stmt_open" | "PLpgSQL_stmt_fetch" | "PLpgSQL_stmt_close" => {
            c.kind(StatementKind::Fetch)
        }
        _ => {}
    }
}

/// One embedded SQL text: a statement, an expression or an assignment,
/// parsed in the grammar mode the compiler recorded for it.
fn expression(c: &mut Collector, expr: &Value, stmt: &str, field: &str) {
    let Some(query) = expr.get("query").and_then(Value::as_str) else {
        c.unknown(|| format!("{stmt}: SQL text missing from the compiled body"));
        return;
    };
    let mode = expr.get("parseMode").and_then(Value::as_i64).unwrap_or(0);
    let options = match mode {
        0 => ParserOptions::DEFAULT,
        2 => ParserOptions::PLPGSQL_EXPR,
        3 => ParserOptions::PLPGSQL_ASSIGN1,
        4 => ParserOptions::PLPGSQL_ASSIGN2,
        5 => ParserOptions::PLPGSQL_ASSIGN3,
        other => {
            c.unknown(|| format!("{stmt}: SQL text in parse mode {other}"));
            return;
        }
    };
    c.nested(query, options, "PL/pgSQL");
    let dynamic = matches!(
        (stmt, field),
        ("PLpgSQL_stmt_dynexecute", "query")
            | ("PLpgSQL_stmt_dynfors", "query")
            | ("PLpgSQL_stmt_open", "dynquery")
            | ("PLpgSQL_stmt_return_query", "dynquery")
    );
    if dynamic {
        match constant_sql(query, options) {
            Some(sql) => c.nested(&sql, ParserOptions::DEFAULT, "EXECUTE"),
            None => c.unknown(|| "dynamic EXECUTE of a computed string".to_owned()),
        }
    }
}

/// The SQL text of an expression that is a single string constant.
fn constant_sql(expr: &str, options: ParserOptions) -> Option<String> {
    let parsed = pg_query::parse(expr, options).ok()?;
    let [raw] = parsed.protobuf.stmts.as_slice() else {
        return None;
    };
    let Some(pg_query::NodeEnum::SelectStmt(s)) = raw.stmt.as_deref().and_then(|n| n.node.as_ref())
    else {
        return None;
    };
    if !s.from_clause.is_empty() || s.where_clause.is_some() {
        return None;
    }
    let [target] = s.target_list.as_slice() else {
        return None;
    };
    let Some(pg_query::NodeEnum::ResTarget(t)) = &target.node else {
        return None;
    };
    t.val.as_deref().and_then(const_string).map(str::to_owned)
}
