//! DSQL's statement rules: which statements, clauses, types and options DSQL refuses before
//! execution, and with which SQLSTATE and words; plus the DSQL-only syntax (`CREATE INDEX
//! ASYNC`, `ALTER TABLE ASYNC`) rewritten into what PostgreSQL runs.
//!
//! Classification uses PostgreSQL's own grammar (libpg_query, through `pg_query`), so node
//! names in `unsupported statement: <name>` are PostgreSQL's parse node names without the
//! `Stmt` suffix, as DSQL reports them. Text that does not parse is passed through untouched:
//! the upstream then answers with PostgreSQL's own syntax error, as DSQL would. Text that is
//! too deeply nested for the checker is refused (54001), never passed through unchecked.
//! Dropping a primary-key column needs the catalog: `check` returns a guard statement that
//! PostgreSQL runs just before it (see [`Checked::guard`]).
//!
//! Decisions are remembered per query shape (libpg_query's fingerprint), so a workload that
//! repeats its queries with other values is parsed to a tree once per shape; see [`check`].

use pg_query::NodeEnum;
use pg_query::protobuf::{
    AlterTableType, ConstrType, LockClauseStrength, ObjectType, TransactionStmtKind,
    VariableSetKind, a_const,
};

/// DSQL's SQLSTATE for a refused feature.
pub(crate) const FEATURE_NOT_SUPPORTED: &str = "0A000";

/// A statement DSQL refuses: the error the client gets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Refusal {
    pub(crate) code: &'static str,
    pub(crate) message: String,
}

impl Refusal {
    fn unsupported(message: impl Into<String>) -> Self {
        Refusal {
            code: FEATURE_NOT_SUPPORTED,
            message: message.into(),
        }
    }
}

/// What a statement does, as far as DSQL's transaction rules care.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Class {
    /// Schema change: at most one per transaction, never with DML.
    Ddl,
    /// Writes rows: never in a transaction with DDL.
    Dml,
    /// `COPY ... FROM STDIN`: writes rows, and puts the session in copy-in mode (PostgreSQL
    /// ignores Sync until CopyDone or CopyFail).
    CopyFrom,
    /// `BEGIN` / `START TRANSACTION` (isolation already checked).
    Begin,
    /// `COMMIT` / `END`.
    Commit,
    /// `ROLLBACK` / `ABORT`.
    Rollback,
    /// Anything else (queries, SET, SHOW, ...).
    Other,
}

impl Class {
    /// Whether statements of this class write rows (DML for the transaction rules).
    pub(crate) fn writes(self) -> bool {
        matches!(self, Class::Dml | Class::CopyFrom)
    }
}

/// The outcome of checking one query string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Checked {
    /// One class per statement, in order (empty for an empty query or text that does not parse).
    pub(crate) classes: Vec<Class>,
    /// The text to send upstream instead, when DSQL-only syntax was rewritten.
    pub(crate) rewritten: Option<String>,
    /// Each statement's byte range in the text (aligned with `classes`); empty when the decision
    /// was remembered (only texts without transaction control statements are, see [`check`]).
    pub(crate) spans: Vec<(usize, usize)>,
    /// A statement to run first, in the same transaction, for a rule that needs the catalog
    /// (a `DO` block that raises DSQL's error); depends on the text (names), like `rewritten`.
    pub(crate) guard: Option<String>,
}

/// Checks `sql` (one query string, possibly several statements) against DSQL's rules.
///
/// Queries that differ only in their constants (the same query with other values, as most
/// applications send) are decided once: the decision is remembered under libpg_query's
/// fingerprint of the text, which hashes the parse tree without constant values, locations and
/// aliases. Only decisions that cannot depend on what a fingerprint leaves out are remembered
/// (see [`remember`]); everything else is parsed and decided every time.
pub(crate) fn check(sql: &str) -> Result<Checked, Refusal> {
    // ASYNC is not PostgreSQL: such text is rewritten, never remembered. Text that cannot be
    // remembered (BEGIN, COMMIT, SET, DDL) is not fingerprinted: it would be parsed twice.
    let fingerprint = if mentions_async(sql) || !may_be_remembered(sql) {
        None
    } else {
        pg_query::fingerprint(sql, 0, 0).ok().map(|f| f.value)
    };
    if let Some(fp) = fingerprint
        && let Some(classes) = DECIDED.with(|d| d.borrow().get(&fp).cloned())
    {
        return Ok(Checked {
            classes: classes.into_vec(),
            rewritten: None,
            spans: Vec::new(),
            guard: None,
        });
    }
    let (checked, rememberable) = check_parsed(sql)?;
    if let Some(fp) = fingerprint
        && rememberable
    {
        DECIDED.with(|d| remember(&mut d.borrow_mut(), fp, &checked.classes));
    }
    Ok(checked)
}

/// Most decisions remembered per gateway thread; when full, it starts again empty (a workload
/// has far fewer distinct query shapes; a hostile one only costs its own parsing).
const MAX_DECIDED: usize = 4096;
/// libpg_query's fingerprint ignores everything below 100 levels of its walk (about two per
/// level of [`pg_query::ParseResult::nodes`]): only shallower trees are remembered, so two texts
/// with one fingerprint have the same whole tree up to constants, locations and aliases.
const MAX_REMEMBERED_DEPTH: i32 = 30;

thread_local! {
    /// Fingerprint -> statement classes of an accepted query string (the gateway's thread).
    static DECIDED: std::cell::RefCell<std::collections::HashMap<u64, Box<[Class]>>> =
        Default::default();
}

fn remember(
    decided: &mut std::collections::HashMap<u64, Box<[Class]>>,
    fp: u64,
    classes: &[Class],
) {
    if decided.len() >= MAX_DECIDED {
        decided.clear();
    }
    decided.insert(fp, classes.into());
}

/// Whether the text's first word starts a statement whose decision may be remembered (see
/// [`check_parsed`]); a cheap test on the first word only, so text starting with a comment says
/// yes and the parse decides.
fn may_be_remembered(sql: &str) -> bool {
    let rest = sql.trim_start_matches(|c: char| c.is_ascii_whitespace() || c == '(');
    if rest.starts_with("--") || rest.starts_with("/*") {
        return true;
    }
    let word = rest
        .split(|c: char| !c.is_ascii_alphabetic())
        .next()
        .unwrap_or("");
    [
        "select", "insert", "update", "delete", "with", "values", "table",
    ]
    .iter()
    .any(|k| word.eq_ignore_ascii_case(k))
}

/// Whether the text may hold DSQL's `ASYNC` keyword (a cheap test before the lexer).
fn mentions_async(sql: &str) -> bool {
    sql.as_bytes()
        .windows(5)
        .any(|w| w.eq_ignore_ascii_case(b"async"))
}

/// Parses and decides; also says whether the decision may be remembered by fingerprint: only
/// when every statement is SELECT (without INTO), INSERT, UPDATE or DELETE, accepted and not
/// rewritten, and the tree is shallow. The rules for those look at node kinds and flags (locking
/// strength, TABLESAMPLE, INTO), never at constants, names or aliases, which a fingerprint
/// leaves out.
fn check_parsed(sql: &str) -> Result<(Checked, bool), Refusal> {
    let (parse_text, asyncs) = strip_async(sql);
    let parsed = match pg_query::parse(&parse_text, 0) {
        Ok(p) => p,
        Err(e) => return unparsed(&e).map(|c| (c, false)),
    };
    let mut rememberable = true;
    let mut classes = Vec::with_capacity(parsed.protobuf.stmts.len());
    let mut rewritten_parts: Vec<String> = Vec::new();
    let mut any_rewrite = false;
    let mut dropped_columns: Vec<(String, String)> = Vec::new();
    let mut spans = Vec::with_capacity(parsed.protobuf.stmts.len());
    for raw in &parsed.protobuf.stmts {
        let start = usize::try_from(raw.stmt_location).unwrap_or(0);
        let end = if raw.stmt_len == 0 {
            parse_text.len()
        } else {
            start + usize::try_from(raw.stmt_len).unwrap_or(0)
        };
        let end = end.min(parse_text.len());
        let is_async = asyncs.iter().any(|a| (start..end).contains(a));
        let Some(node) = raw.stmt.as_ref().and_then(|s| s.node.as_ref()) else {
            continue;
        };
        rememberable &= matches!(
            node,
            NodeEnum::SelectStmt(_)
                | NodeEnum::InsertStmt(_)
                | NodeEnum::UpdateStmt(_)
                | NodeEnum::DeleteStmt(_)
        );
        let class = check_statement(node, is_async)?;
        classes.push(class);
        spans.push((start, end));
        if let NodeEnum::AlterTableStmt(a) = node {
            dropped_columns.extend(dropped_columns_of(a));
        }
        let text = parse_text.get(start..end).unwrap_or("");
        if is_async {
            any_rewrite = true;
            rewritten_parts.push(async_job_sql(node, text));
        } else {
            rewritten_parts.push(text.to_owned());
        }
    }
    // Locking clauses and TABLESAMPLE may sit in any subquery: look at every node.
    for (node, depth, _, _) in parsed.protobuf.nodes() {
        rememberable &= depth <= MAX_REMEMBERED_DEPTH;
        match node {
            pg_query::NodeRef::SelectStmt(s) => {
                for lc in &s.locking_clause {
                    if let Some(NodeEnum::LockingClause(lc)) = &lc.node {
                        let strength = lc.strength;
                        if strength != LockClauseStrength::LcsForupdate as i32
                            && strength != LockClauseStrength::LcsForkeyshare as i32
                        {
                            return Err(Refusal::unsupported(
                                "locking clauses other than FOR UPDATE/FOR KEY SHARE are not supported",
                            ));
                        }
                    }
                }
                for from in &s.from_clause {
                    check_from(from)?;
                }
            }
            pg_query::NodeRef::JoinExpr(j) => {
                for side in [&j.larg, &j.rarg].into_iter().flatten() {
                    check_from(side)?;
                }
            }
            _ => {}
        }
    }
    let checked = Checked {
        classes,
        spans,
        rewritten: any_rewrite.then(|| rewritten_parts.join(";\n")),
        guard: (!dropped_columns.is_empty()).then(|| primary_key_guard(&dropped_columns)),
    };
    let rememberable = rememberable && !any_rewrite && checked.guard.is_none();
    Ok((checked, rememberable))
}

/// DSQL's words for dropping a primary-key column. Inference: the refusal is recorded, its
/// words are not; these follow DSQL's pattern for ALTER TABLE.
pub(crate) const PRIMARY_KEY_COLUMN: &str =
    "ALTER TABLE DROP COLUMN not supported for primary key column";

/// (relation as `to_regclass` reads it, column) for every `DROP COLUMN` of an ALTER TABLE.
fn dropped_columns_of(a: &pg_query::protobuf::AlterTableStmt) -> Vec<(String, String)> {
    let Some(rel) = &a.relation else {
        return Vec::new();
    };
    let quote = |s: &str| format!("\"{}\"", s.replace('"', "\"\""));
    let name = if rel.schemaname.is_empty() {
        quote(&rel.relname)
    } else {
        format!("{}.{}", quote(&rel.schemaname), quote(&rel.relname))
    };
    a.cmds
        .iter()
        .filter_map(|c| match &c.node {
            Some(NodeEnum::AlterTableCmd(cmd))
                if cmd.subtype == AlterTableType::AtDropColumn as i32 =>
            {
                Some((name.clone(), cmd.name.clone()))
            }
            _ => None,
        })
        .collect()
}

/// A text literal that cannot break out of anything it is put in: the UTF-8 bytes, hex-coded.
fn hex_literal(s: &str) -> String {
    let hex: String = s.bytes().map(|b| format!("{b:02x}")).collect();
    format!("pg_catalog.convert_from(pg_catalog.decode('{hex}', 'hex'), 'UTF8')")
}

/// A `DO` block that raises DSQL's refusal when one of `columns` (relation, column) is part of
/// its table's primary key. Whether it is needs the catalog, so PostgreSQL decides, in the
/// statement's own transaction, just before the ALTER TABLE runs.
fn primary_key_guard(columns: &[(String, String)]) -> String {
    let values: Vec<String> = columns
        .iter()
        .map(|(rel, col)| format!("({}, {})", hex_literal(rel), hex_literal(col)))
        .collect();
    format!(
        "DO $dsql_local_guard$DECLARE c text; BEGIN \
         SELECT d.col INTO c FROM (VALUES {}) AS d(rel, col) \
         JOIN pg_catalog.pg_constraint k ON k.conrelid = pg_catalog.to_regclass(d.rel) AND k.contype = 'p' \
         JOIN pg_catalog.pg_attribute a ON a.attrelid = k.conrelid AND a.attnum = ANY (k.conkey) AND a.attname::text = d.col \
         LIMIT 1; \
         IF c IS NOT NULL THEN RAISE EXCEPTION '{PRIMARY_KEY_COLUMN} \"%\"', c USING ERRCODE = '{FEATURE_NOT_SUPPORTED}'; END IF; \
         END$dsql_local_guard$",
        values.join(", ")
    )
}

/// Statements nested too deeply for the checker (libpg_query's own stack and depth limits,
/// and the protobuf decoder's limit of 100 levels: about 25 nested subqueries or 50 chained
/// operators). Inference: PostgreSQL refuses deeper nesting with this SQLSTATE.
pub(crate) const TOO_COMPLEX: &str = "54001";

/// What a query string that libpg_query could not parse gets.
fn unparsed(e: &pg_query::Error) -> Result<Checked, Refusal> {
    let too_deep = match e {
        pg_query::Error::Decode(_) => true,
        pg_query::Error::Parse(m) => {
            m.contains("stack depth limit exceeded")
                || m.contains("memory exhausted")
                || m.contains("nested too deeply")
        }
        _ => false,
    };
    if too_deep {
        // Unchecked text must not reach PostgreSQL, which may well accept it: every
        // statement in the string would escape the rules.
        return Err(Refusal {
            code: TOO_COMPLEX,
            message: "statement is nested too deeply for dsql-local to check; flatten nested subqueries or long operator chains".into(),
        });
    }
    // Not PostgreSQL: the upstream reports the syntax error itself (it parses the whole
    // string before running any of it).
    Ok(Checked {
        classes: Vec::new(),
        spans: Vec::new(),
        rewritten: None,
        guard: None,
    })
}

fn check_from(node: &pg_query::protobuf::Node) -> Result<(), Refusal> {
    if let Some(NodeEnum::RangeTableSample(_)) = &node.node {
        // Inference: the reference records the refusal, not its words.
        return Err(Refusal::unsupported("TABLESAMPLE not supported"));
    }
    Ok(())
}

/// Blanks the DSQL-only `ASYNC` keyword (`CREATE [UNIQUE] INDEX ASYNC`, `ALTER TABLE ASYNC`)
/// so PostgreSQL's grammar parses the rest; returns the text and the offsets blanked.
fn strip_async(sql: &str) -> (std::borrow::Cow<'_, str>, Vec<usize>) {
    // Cheap test first: almost no query mentions it.
    if !mentions_async(sql) {
        return (sql.into(), Vec::new());
    }
    let Ok(tokens) = pg_query::scan_tokens(sql) else {
        return (sql.into(), Vec::new());
    };
    let word = |i: usize| -> Option<String> {
        let t = tokens.get(i)?;
        let s = sql.get(usize::try_from(t.start).ok()?..usize::try_from(t.end).ok()?)?;
        Some(s.to_ascii_lowercase())
    };
    let mut blanks = Vec::new();
    for i in 0..tokens.len() {
        let w = word(i);
        let next = |k: usize| word(i + k);
        let async_at = match w.as_deref() {
            Some("create") => match next(1).as_deref() {
                Some("index") => Some(i + 2),
                Some("unique") if next(2).as_deref() == Some("index") => Some(i + 3),
                _ => None,
            },
            Some("alter") if next(1).as_deref() == Some("table") => Some(i + 2),
            _ => None,
        };
        if let Some(k) = async_at
            && word(k).as_deref() == Some("async")
        {
            blanks.push(k);
        }
    }
    if blanks.is_empty() {
        return (sql.into(), Vec::new());
    }
    let mut text = sql.to_owned();
    let mut offsets = Vec::new();
    for k in blanks {
        let t = &tokens[k];
        let (s, e) = (t.start as usize, t.end as usize);
        // ASCII letters only, so byte-for-byte replacement keeps every offset.
        text.replace_range(s..e, &" ".repeat(e - s));
        offsets.push(s);
    }
    (text.into(), offsets)
}

/// The SQL that runs an ASYNC statement as a job: the statement itself, recorded in `sys.jobs`,
/// returning the job id as DSQL does.
fn async_job_sql(node: &NodeEnum, text: &str) -> String {
    let (job_type, object) = match node {
        NodeEnum::IndexStmt(i) => ("INDEX_BUILD", i.idxname.clone()),
        NodeEnum::AlterTableStmt(a) => (
            "VALIDATE_CONSTRAINT",
            a.relation
                .as_ref()
                .map(|r| r.relname.clone())
                .unwrap_or_default(),
        ),
        _ => ("JOB", String::new()),
    };
    format!(
        "SELECT job_id FROM sys.dsql_local_run_job({}, {}, {})",
        e_literal(text.trim()),
        e_literal(job_type),
        e_literal(&object)
    )
}

/// An `E'...'` literal: correct whatever `standard_conforming_strings` says.
fn e_literal(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 3);
    out.push_str("E'");
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\'' => out.push_str("''"),
            c => out.push(c),
        }
    }
    out.push('\'');
    out
}

/// PostgreSQL's parse node name as DSQL prints it: the variant name without `Stmt`.
fn node_name(node: &NodeEnum) -> String {
    let debug = format!("{node:?}");
    let name = debug.split('(').next().unwrap_or("");
    name.strip_suffix("Stmt").unwrap_or(name).to_owned()
}

fn unsupported_statement(node: &NodeEnum) -> Refusal {
    Refusal::unsupported(format!("unsupported statement: {}", node_name(node)))
}

fn check_statement(node: &NodeEnum, is_async: bool) -> Result<Class, Refusal> {
    use NodeEnum as N;
    Ok(match node {
        N::SelectStmt(s) => {
            if s.into_clause.is_some() {
                // SELECT INTO is CREATE TABLE AS to PostgreSQL (inference: same words).
                return Err(Refusal::unsupported("unsupported statement: CreateTableAs"));
            }
            Class::Other
        }
        N::InsertStmt(_) | N::UpdateStmt(_) | N::DeleteStmt(_) => Class::Dml,
        N::CopyStmt(c) if c.is_from && c.filename.is_empty() && !c.is_program => Class::CopyFrom,
        N::CopyStmt(c) if c.is_from => Class::Dml,
        N::MergeStmt(_) => return Err(Refusal::unsupported("unsupported statement type: MERGE")),
        N::VacuumStmt(v) if v.is_vacuumcmd => {
            return Err(Refusal::unsupported("unsupported VACUUM statement"));
        }
        N::TruncateStmt(_)
        | N::CreateExtensionStmt(_)
        | N::AlterExtensionStmt(_)
        | N::CreatedbStmt(_)
        | N::DropdbStmt(_)
        | N::AlterDatabaseStmt(_)
        | N::CreateTableAsStmt(_)
        | N::RefreshMatViewStmt(_)
        | N::ListenStmt(_)
        | N::NotifyStmt(_)
        | N::UnlistenStmt(_)
        | N::AlterSystemStmt(_)
        | N::CreateTableSpaceStmt(_)
        | N::DropTableSpaceStmt(_)
        | N::CreateForeignTableStmt(_)
        | N::CreateFdwStmt(_)
        | N::CreateForeignServerStmt(_)
        | N::CreateUserMappingStmt(_)
        | N::ImportForeignSchemaStmt(_)
        | N::CompositeTypeStmt(_)
        | N::CreateRangeStmt(_)
        | N::CreateEventTrigStmt(_)
        | N::CreatePolicyStmt(_)
        | N::RuleStmt(_)
        | N::DoStmt(_)
        | N::CreatePlangStmt(_)
        | N::CreatePublicationStmt(_)
        | N::CreateSubscriptionStmt(_) => return Err(unsupported_statement(node)),
        N::CreateTrigStmt(_) => return Err(Refusal::unsupported("CREATE TRIGGER not supported")),
        N::CreateEnumStmt(_) => return Err(Refusal::unsupported("CREATE TYPE not supported")),
        N::DefineStmt(d) if d.kind == ObjectType::ObjectType as i32 => {
            return Err(Refusal::unsupported("CREATE TYPE not supported"));
        }
        N::AlterEnumStmt(_) | N::AlterTypeStmt(_) => {
            return Err(Refusal::unsupported("ALTER TYPE not supported"));
        }
        N::CreateStmt(c) => {
            check_create_table(c)?;
            Class::Ddl
        }
        N::IndexStmt(i) => {
            if !is_async && !i.primary && !i.isconstraint {
                return Err(Refusal::unsupported(
                    "unsupported mode. please use CREATE INDEX ASYNC.",
                ));
            }
            Class::Ddl
        }
        N::CreateSeqStmt(s) => {
            if !cache_ok(&s.options) {
                return Err(Refusal::unsupported(SEQUENCE_CACHE));
            }
            Class::Ddl
        }
        N::AlterSeqStmt(s) => {
            if has_bad_cache(&s.options) {
                return Err(Refusal::unsupported(SEQUENCE_CACHE));
            }
            Class::Ddl
        }
        N::CreateFunctionStmt(f) => {
            let language = def_string(&f.options, "language").unwrap_or_else(|| "sql".into());
            if !language.eq_ignore_ascii_case("sql") {
                return Err(Refusal::unsupported(format!(
                    "CREATE FUNCTION with language {} not supported",
                    language.to_ascii_lowercase()
                )));
            }
            Class::Ddl
        }
        N::AlterTableStmt(a) => {
            check_alter_table(a, is_async)?;
            Class::Ddl
        }
        N::TransactionStmt(t) => return check_transaction(t),
        N::VariableSetStmt(v) => {
            check_set(v)?;
            Class::Other
        }
        N::ViewStmt(_)
        | N::DropStmt(_)
        | N::RenameStmt(_)
        | N::CreateSchemaStmt(_)
        | N::CreateDomainStmt(_)
        | N::AlterDomainStmt(_)
        | N::CreateRoleStmt(_)
        | N::AlterRoleStmt(_)
        | N::DropRoleStmt(_)
        | N::AlterFunctionStmt(_)
        | N::AlterObjectSchemaStmt(_)
        | N::AlterOwnerStmt(_)
        | N::CommentStmt(_)
        | N::DefineStmt(_)
        | N::CreateStatsStmt(_) => Class::Ddl,
        _ => Class::Other,
    })
}

/// Recorded: "CREATE SEQUENCE is not supported without an explicit cache size..."; the advice
/// after the recorded words is ours.
const SEQUENCE_CACHE: &str = "CREATE SEQUENCE is not supported without an explicit cache size. Specify CACHE 1 or CACHE >= 65536";
/// Recorded prefix as above.
const IDENTITY_CACHE: &str = "identity column is not supported without an explicit cache size. Specify CACHE 1 or CACHE >= 65536";

fn def_arg<'a>(
    options: &'a [pg_query::protobuf::Node],
    name: &str,
) -> Option<Option<&'a NodeEnum>> {
    options.iter().find_map(|o| match &o.node {
        Some(NodeEnum::DefElem(d)) if d.defname == name => {
            Some(d.arg.as_ref().and_then(|a| a.node.as_ref()))
        }
        _ => None,
    })
}

fn def_string(options: &[pg_query::protobuf::Node], name: &str) -> Option<String> {
    match def_arg(options, name)? {
        Some(NodeEnum::String(s)) => Some(s.sval.clone()),
        Some(NodeEnum::AConst(c)) => match &c.val {
            Some(a_const::Val::Sval(s)) => Some(s.sval.clone()),
            _ => None,
        },
        _ => None,
    }
}

/// The CACHE option's value (None when absent; Some(None) when not a number we can read).
fn cache_value(options: &[pg_query::protobuf::Node]) -> Option<Option<i128>> {
    let arg = def_arg(options, "cache")?;
    Some(match arg {
        Some(NodeEnum::Integer(i)) => Some(i128::from(i.ival)),
        Some(NodeEnum::Float(f)) => f.fval.parse().ok(),
        _ => None,
    })
}

/// DSQL wants an explicit CACHE of 1 or at least 65536.
fn cache_ok(options: &[pg_query::protobuf::Node]) -> bool {
    matches!(cache_value(options), Some(Some(v)) if v == 1 || v >= 65536)
}

fn has_bad_cache(options: &[pg_query::protobuf::Node]) -> bool {
    cache_value(options).is_some() && !cache_ok(options)
}

/// A type as PostgreSQL prints it (`integer`, `bit varying`, `text[]`).
fn type_display(t: &pg_query::protobuf::TypeName) -> String {
    let last = t
        .names
        .iter()
        .filter_map(|n| match &n.node {
            Some(NodeEnum::String(s)) => Some(s.sval.as_str()),
            _ => None,
        })
        .next_back()
        .unwrap_or("");
    let base = match last {
        "int2" => "smallint",
        "int4" => "integer",
        "int8" => "bigint",
        "float4" => "real",
        "float8" => "double precision",
        "bool" => "boolean",
        "varchar" => "character varying",
        "bpchar" => "character",
        "varbit" => "bit varying",
        "timestamptz" => "timestamp with time zone",
        "timestamp" => "timestamp without time zone",
        "timetz" => "time with time zone",
        "time" => "time without time zone",
        other => other,
    };
    let mut s = base.to_owned();
    for _ in &t.array_bounds {
        s.push_str("[]");
    }
    s
}

fn type_base(t: &pg_query::protobuf::TypeName) -> String {
    t.names
        .iter()
        .filter_map(|n| match &n.node {
            Some(NodeEnum::String(s)) => Some(s.sval.to_ascii_lowercase()),
            _ => None,
        })
        .next_back()
        .unwrap_or_default()
}

/// The column types DSQL refuses (reference: "SQL dialect", types).
const UNSUPPORTED_TYPES: &[&str] = &[
    "money",
    "xml",
    "inet",
    "cidr",
    "macaddr",
    "macaddr8",
    "point",
    "line",
    "lseg",
    "box",
    "path",
    "polygon",
    "circle",
    "tsvector",
    "tsquery",
    "int4range",
    "int8range",
    "numrange",
    "tsrange",
    "tstzrange",
    "daterange",
    "int4multirange",
    "int8multirange",
    "nummultirange",
    "tsmultirange",
    "tstzmultirange",
    "datemultirange",
    "bit",
    "varbit",
    "pg_lsn",
    "txid_snapshot",
    "pg_snapshot",
];

fn check_column_type(t: &pg_query::protobuf::TypeName) -> Result<(), Refusal> {
    let base = type_base(t);
    if matches!(
        base.as_str(),
        "serial" | "serial4" | "bigserial" | "serial8" | "smallserial" | "serial2"
    ) && t.names.len() == 1
    {
        return Err(Refusal {
            code: "42704",
            message: format!("type \"{base}\" does not exist"),
        });
    }
    if !t.array_bounds.is_empty() || UNSUPPORTED_TYPES.contains(&base.as_str()) {
        return Err(Refusal::unsupported(format!(
            "datatype {} not supported",
            type_display(t)
        )));
    }
    Ok(())
}

fn check_column(c: &pg_query::protobuf::ColumnDef) -> Result<(), Refusal> {
    if let Some(t) = &c.type_name {
        check_column_type(t)?;
    }
    if c.coll_clause.is_some() {
        // Inference: DSQL documents COLLATE as unsupported in CREATE TABLE, not its words.
        return Err(Refusal::unsupported(
            "COLLATE not supported for CREATE TABLE",
        ));
    }
    for con in &c.constraints {
        if let Some(NodeEnum::Constraint(con)) = &con.node
            && con.contype == ConstrType::ConstrIdentity as i32
        {
            if let Some(t) = &c.type_name
                && type_base(t) != "int8"
            {
                return Err(Refusal::unsupported(format!(
                    "datatype {} not supported, identity column type must be bigint",
                    type_display(t)
                )));
            }
            if !cache_ok(&con.options) {
                return Err(Refusal::unsupported(IDENTITY_CACHE));
            }
        }
    }
    Ok(())
}

fn check_create_table(c: &pg_query::protobuf::CreateStmt) -> Result<(), Refusal> {
    match c.relation.as_ref().map(|r| r.relpersistence.as_str()) {
        Some("t") => {
            return Err(Refusal::unsupported(
                "TEMPORARY or TEMP table not supported for CREATE TABLE",
            ));
        }
        Some("u") => {
            return Err(Refusal::unsupported(
                "UNLOGGED table not supported for CREATE TABLE",
            ));
        }
        _ => {}
    }
    // Inference for the next three: documented as unsupported, words ours in DSQL's pattern.
    if !c.inh_relations.is_empty() {
        return Err(Refusal::unsupported(
            "INHERITS not supported for CREATE TABLE",
        ));
    }
    if c.partspec.is_some() || c.partbound.is_some() {
        return Err(Refusal::unsupported(
            "PARTITION not supported for CREATE TABLE",
        ));
    }
    for elt in &c.table_elts {
        if let Some(NodeEnum::ColumnDef(col)) = &elt.node {
            check_column(col)?;
        }
    }
    Ok(())
}

fn check_alter_table(
    a: &pg_query::protobuf::AlterTableStmt,
    is_async: bool,
) -> Result<(), Refusal> {
    for cmd in &a.cmds {
        let Some(NodeEnum::AlterTableCmd(cmd)) = &cmd.node else {
            continue;
        };
        let sub = cmd.subtype;
        if sub == AlterTableType::AtValidateConstraint as i32 {
            if !is_async {
                // Inference, in the words DSQL uses for CREATE INDEX.
                return Err(Refusal::unsupported(
                    "unsupported mode. please use ALTER TABLE ASYNC ... VALIDATE CONSTRAINT.",
                ));
            }
            continue;
        }
        if is_async {
            return Err(Refusal::unsupported(
                "ALTER TABLE ASYNC supports only VALIDATE CONSTRAINT",
            ));
        }
        if sub == AlterTableType::AtAddColumn as i32 {
            if let Some(NodeEnum::ColumnDef(col)) = cmd.def.as_ref().and_then(|d| d.node.as_ref()) {
                if let Some(t) = &col.type_name {
                    check_column_type(t)?;
                }
                if !col.constraints.is_empty() || col.raw_default.is_some() {
                    return Err(Refusal::unsupported(
                        "ALTER TABLE ADD COLUMN with constraint not supported",
                    ));
                }
            }
        } else if sub == AlterTableType::AtAddConstraint as i32 {
            let ok = match cmd.def.as_ref().and_then(|d| d.node.as_ref()) {
                Some(NodeEnum::Constraint(c)) => {
                    c.contype == ConstrType::ConstrForeign as i32 && c.skip_validation
                }
                _ => false,
            };
            if !ok {
                // Inference: recorded as refused; the words are ours.
                return Err(Refusal::unsupported(
                    "ALTER TABLE ADD CONSTRAINT not supported; only FOREIGN KEY ... NOT VALID, then ALTER TABLE ASYNC ... VALIDATE CONSTRAINT",
                ));
            }
        } else if sub == AlterTableType::AtAlterColumnType as i32 {
            // Inference: recorded as refused; the words are ours.
            return Err(Refusal::unsupported(
                "ALTER TABLE ALTER COLUMN TYPE not supported",
            ));
        }
    }
    Ok(())
}

fn check_transaction(t: &pg_query::protobuf::TransactionStmt) -> Result<Class, Refusal> {
    use TransactionStmtKind as K;
    let kind = t.kind;
    if kind == K::TransStmtBegin as i32 || kind == K::TransStmtStart as i32 {
        check_transaction_options(&t.options)?;
        return Ok(Class::Begin);
    }
    if kind == K::TransStmtCommit as i32 {
        return Ok(Class::Commit);
    }
    if kind == K::TransStmtRollback as i32 {
        return Ok(Class::Rollback);
    }
    let what = if kind == K::TransStmtSavepoint as i32 {
        "SAVEPOINT"
    } else if kind == K::TransStmtRollbackTo as i32 {
        "ROLLBACK TO"
    } else if kind == K::TransStmtRelease as i32 {
        "RELEASE"
    } else if kind == K::TransStmtPrepare as i32 {
        "PREPARE TRANSACTION"
    } else if kind == K::TransStmtCommitPrepared as i32 {
        "COMMIT PREPARED"
    } else {
        "ROLLBACK PREPARED"
    };
    Err(Refusal::unsupported(format!(
        "unsupported transaction statement: {what}"
    )))
}

fn check_transaction_options(options: &[pg_query::protobuf::Node]) -> Result<(), Refusal> {
    if let Some(level) = def_string(options, "transaction_isolation")
        && !level.eq_ignore_ascii_case("repeatable read")
    {
        return Err(Refusal::unsupported(format!(
            "Unsupported isolation level: {}",
            level.to_ascii_uppercase()
        )));
    }
    Ok(())
}

/// Session parameters DSQL refuses to set (recorded: the two `default_transaction_*`; the
/// others are inference: they would change the isolation DSQL fixes).
pub(crate) const REFUSED_PARAMETERS: &[&str] = &[
    "default_transaction_read_only",
    "default_transaction_isolation",
    "default_transaction_deferrable",
    "transaction_isolation",
    "transaction_deferrable",
];

/// The refusal for setting parameter `name`, as DSQL words it.
pub(crate) fn refused_parameter(name: &str) -> Option<Refusal> {
    let lower = name.to_ascii_lowercase();
    REFUSED_PARAMETERS.contains(&lower.as_str()).then(|| {
        Refusal::unsupported(format!(
            "setting configuration parameter \"{lower}\" not supported"
        ))
    })
}

fn check_set(v: &pg_query::protobuf::VariableSetStmt) -> Result<(), Refusal> {
    if v.kind == VariableSetKind::VarSetMulti as i32 {
        // SET TRANSACTION ... / SET SESSION CHARACTERISTICS AS TRANSACTION ...
        let name = if v.name == "TRANSACTION" {
            "TRANSACTION".to_owned()
        } else {
            v.name.to_ascii_uppercase()
        };
        return Err(Refusal::unsupported(format!(
            "setting configuration parameter \"{name}\" not supported"
        )));
    }
    if v.kind == VariableSetKind::VarReset as i32 || v.kind == VariableSetKind::VarResetAll as i32 {
        return Ok(());
    }
    match refused_parameter(&v.name) {
        Some(r) => Err(r),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(sql: &str) -> Refusal {
        check(sql).expect_err(sql)
    }

    /// Whether `sql`'s decision is now remembered (this test's thread has its own memory).
    fn remembered(sql: &str) -> bool {
        let fp = pg_query::fingerprint(sql, 0, 0).unwrap().value;
        DECIDED.with(|d| d.borrow().contains_key(&fp))
    }

    #[test]
    fn queries_differing_in_constants_are_decided_once() {
        let first = "SELECT abalance FROM pgbench_accounts WHERE aid = 12345";
        assert!(!remembered(first));
        let c = check(first).unwrap();
        assert_eq!(c.classes, vec![Class::Other]);
        assert!(remembered(first));
        // Other constants, other spacing and case: the same decision, from memory.
        let again = "select abalance  from pgbench_accounts where aid = 7";
        assert!(remembered(again));
        let from_memory = check(again).unwrap();
        assert_eq!(from_memory.classes, c.classes);
        assert_eq!((from_memory.rewritten, from_memory.guard), (None, None));
        let dml = "UPDATE t SET a = 1 WHERE id = 2; INSERT INTO t VALUES (3)";
        assert_eq!(check(dml).unwrap().classes, vec![Class::Dml, Class::Dml]);
        assert!(remembered(
            "UPDATE t SET a = 9 WHERE id = 8; INSERT INTO t VALUES (7)"
        ));
    }

    #[test]
    fn only_texts_that_may_be_remembered_are_fingerprinted() {
        for yes in [
            "SELECT 1",
            "  (select 1)",
            "with x as (select 1) select * from x",
            "Insert into t values (1)",
            "-- a comment\nBEGIN",
            "/* c */ SET x = 1",
        ] {
            assert!(may_be_remembered(yes), "{yes}");
        }
        for no in [
            "BEGIN",
            "commit",
            "SET search_path = public",
            "CREATE TABLE t (a int)",
            "",
        ] {
            assert!(!may_be_remembered(no), "{no}");
        }
        // Never fingerprinted, so never remembered; decided in full every time.
        check("BEGIN").unwrap();
        assert!(!remembered("BEGIN"));
    }

    #[test]
    fn remembered_decisions_never_change_a_refusal() {
        // Each pair: an accepted text, then one that must still be refused once the first is
        // remembered (what differs is a node kind or flag, never only a constant).
        let nest = |inner: &str| {
            let mut q = inner.to_owned();
            for _ in 0..16 {
                q = format!("SELECT * FROM ({q}) s");
            }
            q
        };
        let pairs = [
            (
                "SELECT * FROM t WHERE id = 1 FOR UPDATE".to_owned(),
                "SELECT * FROM t WHERE id = 1 FOR SHARE".to_owned(),
            ),
            (
                "SELECT * FROM t x".to_owned(),
                "SELECT * FROM t x TABLESAMPLE SYSTEM (10)".to_owned(),
            ),
            (
                "SELECT 1 AS a".to_owned(),
                "SELECT 1 AS a INTO x".to_owned(),
            ),
            (
                nest("SELECT * FROM t FOR UPDATE"),
                nest("SELECT * FROM t FOR NO KEY UPDATE"),
            ),
            ("SELECT 1".to_owned(), "TRUNCATE t".to_owned()),
            (
                "SET search_path = public".to_owned(),
                "SET TRANSACTION READ ONLY".to_owned(),
            ),
        ];
        for (accepted, refused_sql) in &pairs {
            check(accepted).unwrap_or_else(|e| panic!("{accepted}: {e:?}"));
            refused(refused_sql);
        }
        // Deep trees and SET are parsed every time, never remembered.
        assert!(!remembered(&nest("SELECT * FROM t FOR UPDATE")));
        assert!(!remembered("SET search_path = public"));
    }

    #[test]
    fn node_names_follow_dsql() {
        assert_eq!(
            refused("TRUNCATE t").message,
            "unsupported statement: Truncate"
        );
        assert_eq!(
            refused("CREATE DATABASE x").message,
            "unsupported statement: Createdb"
        );
        assert_eq!(
            refused("create extension pgcrypto").message,
            "unsupported statement: CreateExtension"
        );
        assert_eq!(
            refused("CREATE MATERIALIZED VIEW v AS SELECT 1").message,
            "unsupported statement: CreateTableAs"
        );
    }

    #[test]
    fn async_is_stripped_and_rewritten() {
        let c = check("CREATE INDEX ASYNC i ON t (a)").unwrap();
        assert_eq!(c.classes, vec![Class::Ddl]);
        let sql = c.rewritten.unwrap();
        assert!(
            sql.contains("sys.dsql_local_run_job(E'CREATE INDEX"),
            "{sql}"
        );
        assert_eq!(
            refused("CREATE INDEX i ON t (a)").message,
            "unsupported mode. please use CREATE INDEX ASYNC."
        );
        // A string that mentions ASYNC is data, not syntax.
        assert!(
            check("SELECT 'create index async'")
                .unwrap()
                .rewritten
                .is_none()
        );
    }

    #[test]
    fn nesting_too_deep_to_check_is_refused_not_passed_through() {
        for sql in [
            format!("SELECT {}1{}", "(".repeat(10_000), ")".repeat(10_000)),
            format!(
                "SELECT {}1{}",
                "(SELECT ".repeat(10_000),
                ")".repeat(10_000)
            ),
            format!(
                "TRUNCATE t; SELECT {}1{}",
                "(SELECT ".repeat(30),
                ")".repeat(30)
            ),
            format!("SELECT 1{}", "+1".repeat(100_000)),
        ] {
            assert_eq!(refused(&sql).code, TOO_COMPLEX, "{}", &sql[..40]);
        }
        // Shallower nesting is checked as usual; real syntax errors are PostgreSQL's to report.
        let ok = format!("SELECT {}1{}", "(SELECT ".repeat(10), ")".repeat(10));
        assert_eq!(check(&ok).unwrap().classes, vec![Class::Other]);
        assert!(check("SELEKT 1").unwrap().classes.is_empty());
    }

    /// Texts that libpg_query's fingerprint cannot tell apart (it ignores constants) but the
    /// rules must: a decision cache keyed by fingerprint alone would give the second the
    /// first's answer. Each pair is checked in both orders, the cache warm with the other.
    #[test]
    fn decisions_that_fingerprints_cannot_tell_apart() {
        let pairs = [
            (
                "BEGIN ISOLATION LEVEL SERIALIZABLE",
                "BEGIN ISOLATION LEVEL REPEATABLE READ",
            ),
            (
                "CREATE FUNCTION f() RETURNS int LANGUAGE plpgsql AS $$ select 1 $$",
                "CREATE FUNCTION f() RETURNS int LANGUAGE sql AS $$ select 1 $$",
            ),
        ];
        for _ in 0..2 {
            for (refused_sql, accepted_sql) in pairs {
                assert!(check(refused_sql).is_err(), "{refused_sql}");
                assert!(check(accepted_sql).is_ok(), "{accepted_sql}");
            }
        }
        // Rewritten text and guards carry the statement's own constants and names.
        for n in ["1", "2", "1"] {
            let c = check(&format!("CREATE INDEX ASYNC i ON t (a) WHERE a > {n}")).unwrap();
            assert!(c.rewritten.unwrap().contains(&format!("a > {n}")));
        }
        // Statement spans are offsets into this very text (whitespace changes no fingerprint).
        for sql in [
            "BEGIN; INSERT INTO t VALUES (1); COMMIT",
            "BEGIN;\n\n   INSERT INTO t VALUES (2);COMMIT",
            "BEGIN; INSERT INTO t VALUES (1); COMMIT",
        ] {
            let c = check(sql).unwrap();
            let words: Vec<&str> = c
                .spans
                .iter()
                .map(|(s, e)| sql[*s..*e].trim_start())
                .collect();
            assert!(words[0].starts_with("BEGIN"), "{words:?}");
            assert!(words[1].starts_with("INSERT"), "{words:?}");
            assert!(words[2].starts_with("COMMIT"), "{words:?}");
            assert!(
                sql[c.spans[0].1..].starts_with(';'),
                "BEGIN's span ends at its `;`"
            );
        }
        for col in ["x", "y", "x"] {
            let c = check(&format!("ALTER TABLE t DROP COLUMN {col}")).unwrap();
            let hex: String = col.bytes().map(|b| format!("{b:02x}")).collect();
            assert!(c.guard.unwrap().contains(&format!("'{hex}'")));
        }
    }

    #[test]
    fn types_and_options() {
        assert_eq!(refused("CREATE TABLE t (a serial)").code, "42704");
        assert_eq!(
            refused("CREATE TABLE t (a int[])").message,
            "datatype integer[] not supported"
        );
        assert_eq!(
            refused("CREATE TABLE t (a int GENERATED ALWAYS AS IDENTITY (CACHE 65536))").message,
            "datatype integer not supported, identity column type must be bigint"
        );
        assert!(
            check("CREATE TABLE t (a bigint GENERATED ALWAYS AS IDENTITY (CACHE 65536))").is_ok()
        );
        assert!(check("CREATE SEQUENCE s CACHE 1").is_ok());
        assert!(check("CREATE SEQUENCE s CACHE 2").is_err());
        assert_eq!(
            refused("BEGIN ISOLATION LEVEL SERIALIZABLE").message,
            "Unsupported isolation level: SERIALIZABLE"
        );
        assert_eq!(
            refused("SET TRANSACTION ISOLATION LEVEL READ COMMITTED").message,
            "setting configuration parameter \"TRANSACTION\" not supported"
        );
        assert_eq!(
            refused("SELECT * FROM t FOR SHARE").message,
            "locking clauses other than FOR UPDATE/FOR KEY SHARE are not supported"
        );
        assert!(check("SELECT * FROM (SELECT * FROM t FOR NO KEY UPDATE) s").is_err());
        assert!(check("SELECT * FROM t FOR UPDATE").is_ok());
    }
}
