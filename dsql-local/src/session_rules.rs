//! DSQL's rules applied to one relayed session: the statement rules of [`crate::dialect`] and
//! the transaction rules (one DDL per transaction, no DDL with DML, limits on rows, size and age).
//!
//! How a refusal reaches the client: the gateway sends the upstream, instead of the refused
//! message, a statement that is a syntax error naming a unique marker
//! (`dsql_local_refused_<n>`). PostgreSQL then does what DSQL does with a refused statement:
//! inside a transaction block the transaction is aborted (25P02 until ROLLBACK); in the
//! extended protocol everything up to Sync is discarded, then ReadyForQuery. The backend half
//! of the relay swaps that syntax error for DSQL's SQLSTATE and words. Only the client's own
//! session sees markers, and the relay never has to guess the transaction state.
//!
//! The frontend half predicts transaction boundaries from the statements it forwards
//! (BEGIN/COMMIT/ROLLBACK, the end of a simple query, Sync); the backend half counts modified
//! rows from CommandComplete tags and resets at ReadyForQuery `I`.
//!
//! The row limit and autocommit statements: an implicit transaction (a simple query outside a
//! transaction block, or an extended-protocol batch up to Sync) commits inside PostgreSQL
//! before the gateway sees its row count, so the gateway alone cannot undo it. When such a
//! transaction writes rows (a DML statement), the frontend half wraps it in two guard
//! statements that run in the same transaction: a start guard that notes the rows the session
//! has modified so far (`pg_stat_xact_user_tables`, which also holds recent transactions'
//! counts not yet flushed, hence the baseline) and an end guard, just before the commit point,
//! that raises DSQL's 54000 when the transaction modified more than the limit, so PostgreSQL
//! rolls it back. The backend half replaces the CommandComplete that crosses the limit with
//! that error (as inside a transaction block) and drops everything after it up to
//! ReadyForQuery; the guards' own answers (`DO`, and ParseComplete/BindComplete/CloseComplete
//! in the extended protocol) never reach the client. No round trip is added and pipelining is
//! unaffected (the guards travel in the same batch); the cost is two `DO` statements per
//! autocommit write, none for reads and explicit transactions.

use crate::dialect::{self, Class, Refusal};
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// SQLSTATE for DSQL's transaction limits.
pub(crate) const PROGRAM_LIMIT_EXCEEDED: &str = "54000";
const MULTIPLE_DDL: &str = "multiple ddl statements not supported in a transaction";
const DDL_AND_DML: &str = "ddl and dml are not supported in the same transaction";
const ROW_LIMIT: &str = "transaction row limit exceeded";
const SIZE_LIMIT: &str = "transaction size limit 10mb exceeded";
const ABORTED: &str =
    "current transaction is aborted, commands ignored until end of transaction block";
/// Largest client message the rules look inside (Query, Parse, Bind, ...); bigger ones are
/// refused without being held whole (see [`FrontendRules::on_oversized`]).
pub(crate) const MAX_CHECKED_MESSAGE: usize = 16 << 20;
/// Most pending substitutions kept per session (refusals whose answer has not come back yet).
const MAX_PENDING: usize = 4096;
/// Most prepared statements / portals whose class is remembered per session.
const MAX_NAMES: usize = 4096;
/// Longest statement or portal name remembered (longer ones are treated as unknown).
const MAX_NAME_LEN: usize = 256;

/// The limits a session enforces; see the builder's setters.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    pub(crate) max_rows: u64,
    pub(crate) max_bytes: u64,
    pub(crate) max_age: Duration,
}

/// What the backend half must do with an answer, queued by the frontend half.
#[derive(Debug)]
pub(crate) enum Pending {
    /// Swap the syntax error naming `marker` for this refusal.
    Refuse { marker: String, refusal: Refusal },
    /// Drop every message up to and including the next ReadyForQuery (a helper statement's answer).
    Swallow,
}

/// State both halves of one relayed session share.
#[derive(Debug, Default)]
pub(crate) struct SessionShared {
    /// (ReadyForQuery count before the answer, what to do with it).
    pending: Mutex<VecDeque<(u64, Pending)>>,
    /// The backend half crossed the row limit inside a transaction block: the transaction is
    /// aborted as far as the client knows; the frontend makes it so upstream.
    poisoned: AtomicBool,
    /// Refusals made in this session (for the gateway's counters).
    pub(crate) refused: AtomicU64,
    /// Batches with guard statements, in order.
    guarded: Mutex<VecDeque<Guarded>>,
    /// One more than the last guarded batch's `seq` (0: none yet), so the backend half takes
    /// the lock only when a guarded batch may be answering.
    guarded_upto: AtomicU64,
    /// Syncs sent inside an extended-protocol COPY FROM STDIN, not counted as batches (by
    /// the `seq` they were sent in): PostgreSQL ignores them, unless the COPY failed before
    /// copy-in mode began; then it answers each, and the backend half must not count those.
    uncounted_syncs: Mutex<VecDeque<u64>>,
    /// One more than the last `seq` in `uncounted_syncs` (0: none yet).
    uncounted_upto: AtomicU64,
}

/// A batch (up to one ReadyForQuery) in which the frontend half sent guard statements.
#[derive(Debug, Clone, Copy)]
struct Guarded {
    /// ReadyForQuery count before the batch's answer.
    seq: u64,
    /// Guards put into the client's query string (simple protocol): (character where each
    /// starts in the string PostgreSQL sees, its length); unused ones are (0, 0).
    moved: [(u32, u32); 2],
    /// Guards sent as extended-protocol messages.
    extended: u32,
}

impl SessionShared {
    fn push(&self, seq: u64, p: Pending) {
        if let Ok(mut q) = self.pending.lock() {
            if q.len() >= MAX_PENDING {
                q.pop_front();
            }
            q.push_back((seq, p));
        }
    }

    /// Notes guards sent in the batch answered before ReadyForQuery number `seq`: `shift` of
    /// the client's text (simple protocol), `extended` guard messages groups (each answered by
    /// CloseComplete, ParseComplete, BindComplete, then `DO` or an error).
    fn push_guarded(&self, seq: u64, moved: [(u32, u32); 2], extended: u32) {
        self.guarded_upto.fetch_max(seq + 1, Ordering::AcqRel);
        if let Ok(mut q) = self.guarded.lock() {
            if let Some(last) = q.back_mut()
                && last.seq == seq
            {
                last.extended += extended;
                return;
            }
            if q.len() >= MAX_PENDING {
                q.pop_front();
            }
            q.push_back(Guarded {
                seq,
                moved,
                extended,
            });
        }
    }

    fn push_uncounted_sync(&self, seq: u64) {
        self.uncounted_upto.fetch_max(seq + 1, Ordering::AcqRel);
        if let Ok(mut q) = self.uncounted_syncs.lock() {
            if q.len() >= MAX_PENDING {
                q.pop_front();
            }
            q.push_back(seq);
        }
    }

    /// At a ReadyForQuery ending batch `seq`: whether it answers an uncounted Sync (the COPY
    /// never began copy-in mode) rather than ending the batch.
    fn answers_uncounted_sync(&self, seq: u64, copy_started: bool) -> bool {
        if self.uncounted_upto.load(Ordering::Acquire) <= seq {
            return false;
        }
        let Ok(mut q) = self.uncounted_syncs.lock() else {
            return false;
        };
        while q.front().is_some_and(|s| *s < seq) {
            q.pop_front();
        }
        if q.front() != Some(&seq) {
            return false;
        }
        if copy_started {
            // Ignored by PostgreSQL, as predicted.
            while q.front() == Some(&seq) {
                q.pop_front();
            }
            return false;
        }
        q.pop_front();
        true
    }

    /// The guards of the batch answered before ReadyForQuery number `seq`, if it has any.
    fn guarded_at(&self, seq: u64) -> Option<Guarded> {
        if self.guarded_upto.load(Ordering::Acquire) <= seq {
            return None;
        }
        let mut q = self.guarded.lock().ok()?;
        while q.front().is_some_and(|g| g.seq < seq) {
            q.pop_front();
        }
        q.front().filter(|g| g.seq == seq).copied()
    }
}

/// The transaction as the frontend half predicts it.
#[derive(Debug, Clone, Default)]
struct Txn {
    explicit: bool,
    ddl: u32,
    dml: bool,
    bytes: u64,
    started: Option<Instant>,
}

/// What the frontend half sends upstream for one client message.
#[derive(Debug)]
pub(crate) enum Forward {
    /// The client's bytes, unchanged.
    Same,
    /// These bytes instead.
    Replace(Vec<u8>),
}

/// The frontend half's rules for one session.
#[derive(Debug)]
pub(crate) struct FrontendRules {
    limits: Limits,
    txn: Txn,
    /// Messages that produce one ReadyForQuery each (Query, Sync, FunctionCall) sent so far,
    /// counting the login's.
    rfq_seq: u64,
    markers: u64,
    /// Upstream discards until Sync (a refusal in the extended protocol).
    skipping: bool,
    statements: HashMap<Vec<u8>, Known>,
    portals: HashMap<Vec<u8>, Known>,
    /// The current extended-protocol batch started an implicit transaction that writes rows:
    /// its start guard was sent; the end guard goes before its Sync.
    batch_guarded: bool,
    /// An extended-protocol `COPY ... FROM STDIN` was executed and has not ended yet.
    copy_in: bool,
    guard_start: String,
    guard_end: String,
}

/// What is remembered of a prepared statement or portal: its class, and the guard statement
/// (see [`dialect::Checked::guard`]) to run before it executes.
type Known = (Class, Option<Arc<str>>);

/// Names of the guards' prepared statements and portals (extended protocol).
const GUARD_START: &str = "dsql_local_row_guard_start";
const GUARD_END: &str = "dsql_local_row_guard_end";
const GUARD_DDL: &str = "dsql_local_ddl_guard";
/// Rows the session's transactions have modified so far, as PostgreSQL counts them (the
/// counters behind `pg_stat_xact_user_tables`, read from `pg_class` directly: the view costs
/// about 1 ms to plan, this about 0.1 ms; catalogs and TOAST tables are left out as the view
/// leaves them).
const MODIFIED_SO_FAR: &str = "(SELECT COALESCE(pg_catalog.sum(pg_catalog.pg_stat_get_xact_tuples_inserted(c.oid) + pg_catalog.pg_stat_get_xact_tuples_updated(c.oid) + pg_catalog.pg_stat_get_xact_tuples_deleted(c.oid)), 0) FROM pg_catalog.pg_class c WHERE c.relkind IN ('r', 'p') AND c.relnamespace <> 'pg_catalog'::pg_catalog.regnamespace)";

/// The functions the row guards call, created with the `sys` schema when dsql-local starts: in
/// a function PostgreSQL plans its queries once per session, where a `DO` block plans them on
/// every run (the guards run twice per autocommit write). The start guard notes the baseline
/// of modified rows; the end guard raises DSQL's row-limit error when the transaction modified
/// more than the limit. Without a baseline in this transaction (its start guard did not run: an
/// earlier error ended the transaction it was in) nothing was written under the guard, so
/// nothing is checked.
pub(crate) fn guard_functions_sql() -> String {
    format!(
        "CREATE OR REPLACE FUNCTION sys.dsql_local_row_guard_start() RETURNS void LANGUAGE plpgsql \
         AS $dsql_local$BEGIN PERFORM pg_catalog.set_config('dsql_local.rows_base', {MODIFIED_SO_FAR}::text, true); END$dsql_local$;\n\
         CREATE OR REPLACE FUNCTION sys.dsql_local_row_guard_end(max_rows bigint) RETURNS void LANGUAGE plpgsql \
         AS $dsql_local$DECLARE base text := pg_catalog.current_setting('dsql_local.rows_base', true); BEGIN \
         IF COALESCE(base, '') <> '' AND {MODIFIED_SO_FAR} - base::bigint > max_rows THEN \
         RAISE EXCEPTION '{ROW_LIMIT}' USING ERRCODE = '{PROGRAM_LIMIT_EXCEEDED}'; END IF; END$dsql_local$;\n\
         GRANT EXECUTE ON FUNCTION sys.dsql_local_row_guard_start() TO PUBLIC;\n\
         GRANT EXECUTE ON FUNCTION sys.dsql_local_row_guard_end(bigint) TO PUBLIC;\n"
    )
}

/// The start guard: a `DO` statement, so that its answer (`DO`) cannot be a client's own
/// (the rules refuse clients' DO statements).
fn guard_start_sql() -> String {
    "DO $dsql_local_guard$BEGIN PERFORM sys.dsql_local_row_guard_start(); END$dsql_local_guard$"
        .to_owned()
}

/// The end guard (see [`guard_functions_sql`]).
fn guard_end_sql(max_rows: u64) -> String {
    format!(
        "DO $dsql_local_guard$BEGIN PERFORM sys.dsql_local_row_guard_end({max_rows}); END$dsql_local_guard$"
    )
}

/// Close, Parse, Bind and Execute of `sql` under `name` (statement and portal), for the
/// extended protocol: answered by CloseComplete, ParseComplete, BindComplete and
/// CommandComplete `DO` (or an error).
fn guard_messages(name: &str, sql: &str) -> Vec<u8> {
    let mut close = vec![b'S'];
    close.extend_from_slice(name.as_bytes());
    close.push(0);
    let mut parse = name.as_bytes().to_vec();
    parse.push(0);
    parse.extend_from_slice(sql.as_bytes());
    parse.push(0);
    parse.extend_from_slice(&0i16.to_be_bytes());
    let mut bind = name.as_bytes().to_vec();
    bind.push(0);
    bind.extend_from_slice(name.as_bytes());
    bind.push(0);
    bind.extend_from_slice(&[0, 0, 0, 0, 0, 0]);
    let mut execute = name.as_bytes().to_vec();
    execute.push(0);
    execute.extend_from_slice(&0i32.to_be_bytes());
    let mut out = crate::wire::message(b'C', &close);
    out.extend_from_slice(&crate::wire::message(b'P', &parse));
    out.extend_from_slice(&crate::wire::message(b'B', &bind));
    out.extend_from_slice(&crate::wire::message(b'E', &execute));
    out
}

fn marker_query(marker: &str) -> Vec<u8> {
    let mut body = marker.as_bytes().to_vec();
    body.push(0);
    crate::wire::message(b'Q', &body)
}

fn marker_parse(name: &[u8], marker: &str) -> Vec<u8> {
    let mut body = name.to_vec();
    body.push(0);
    body.extend_from_slice(marker.as_bytes());
    body.push(0);
    body.extend_from_slice(&0i16.to_be_bytes());
    crate::wire::message(b'P', &body)
}

/// Splits a NUL-terminated string off the front of `b`.
fn cstr(b: &[u8]) -> Option<(&[u8], &[u8])> {
    let end = b.iter().position(|c| *c == 0)?;
    Some((&b[..end], &b[end + 1..]))
}

impl FrontendRules {
    pub(crate) fn new(limits: Limits) -> Self {
        FrontendRules {
            limits,
            txn: Txn::default(),
            rfq_seq: 1,
            markers: 0,
            skipping: false,
            statements: HashMap::new(),
            portals: HashMap::new(),
            batch_guarded: false,
            copy_in: false,
            guard_start: guard_start_sql(),
            guard_end: guard_end_sql(limits.max_rows),
        }
    }

    fn next_marker(&mut self) -> String {
        self.markers += 1;
        format!("dsql_local_refused_{}", self.markers)
    }

    /// Applies the transaction rules to one statement of class `class` on a copy of the state.
    fn apply(&self, txn: &mut Txn, class: Class, now: Instant) -> Result<(), Refusal> {
        if txn.explicit
            && let Some(started) = txn.started
            && now.duration_since(started) > self.limits.max_age
            && !matches!(class, Class::Commit | Class::Rollback)
        {
            return Err(Refusal {
                code: PROGRAM_LIMIT_EXCEEDED,
                // Inference: DSQL's words for this limit are not recorded.
                message: format!(
                    "transaction age limit of {}s exceeded",
                    self.limits.max_age.as_secs()
                ),
            });
        }
        match class {
            Class::Begin => {
                if !txn.explicit {
                    *txn = Txn {
                        explicit: true,
                        started: Some(now),
                        ..Txn::default()
                    };
                }
            }
            Class::Commit => {
                if txn.explicit && txn.bytes > self.limits.max_bytes {
                    return Err(Refusal {
                        code: PROGRAM_LIMIT_EXCEEDED,
                        message: SIZE_LIMIT.into(),
                    });
                }
                *txn = Txn::default();
            }
            Class::Rollback => *txn = Txn::default(),
            Class::Ddl => {
                if txn.dml {
                    return Err(Refusal::unsupported_txn(DDL_AND_DML));
                }
                if txn.ddl >= 1 {
                    return Err(Refusal::unsupported_txn(MULTIPLE_DDL));
                }
                txn.ddl += 1;
            }
            Class::Dml | Class::CopyFrom => {
                if txn.ddl > 0 {
                    return Err(Refusal::unsupported_txn(DDL_AND_DML));
                }
                txn.dml = true;
            }
            Class::Other => {}
        }
        Ok(())
    }

    /// Queues a refusal and returns what to send upstream in place of the refused message.
    fn refuse(
        &mut self,
        shared: &SessionShared,
        refusal: Refusal,
        parse_name: Option<&[u8]>,
    ) -> Vec<u8> {
        let marker = self.next_marker();
        shared.refused.fetch_add(1, Ordering::Relaxed);
        shared.push(
            self.rfq_seq,
            Pending::Refuse {
                marker: marker.clone(),
                refusal,
            },
        );
        match parse_name {
            Some(name) => {
                self.skipping = true;
                marker_parse(name, &marker)
            }
            None => marker_query(&marker),
        }
    }

    /// After the upstream was told to abort (a refusal inside a transaction block), nothing more
    /// counts in this transaction until it ends.
    fn after_refusal(&mut self) {
        // The transaction stays open upstream (aborted) until the client ends it; keep
        // `explicit` so its ROLLBACK is understood, forget what it did.
        self.txn.ddl = 0;
        self.txn.dml = false;
    }

    /// Decides what to send upstream for one complete client message (`frame`: tag, length,
    /// body). The caller forwards the result in order.
    pub(crate) fn on_message(&mut self, shared: &SessionShared, frame: &[u8]) -> Forward {
        let tag = frame[0];
        let body = &frame[5..];
        match tag {
            b'Q' => {
                let forward = self.on_query(shared, body);
                self.rfq_seq += 1;
                forward
            }
            b'P' => self.on_parse(shared, body),
            b'B' => {
                if let Some((portal, rest)) = cstr(body)
                    && let Some((stmt, _)) = cstr(rest)
                {
                    let known = self
                        .statements
                        .get(stmt)
                        .cloned()
                        .unwrap_or((Class::Other, None));
                    if known.0.writes() {
                        self.txn.bytes += body.len() as u64;
                    }
                    remember(&mut self.portals, portal, known);
                }
                Forward::Same
            }
            b'E' => self.on_execute(shared, body, frame),
            b'C' => {
                if let Some((&kind, rest)) = body.split_first()
                    && let Some((name, _)) = cstr(rest)
                {
                    match kind {
                        b'S' => self.statements.remove(name),
                        _ => self.portals.remove(name),
                    };
                }
                Forward::Same
            }
            // A Sync inside copy-in mode is ignored by PostgreSQL (no ReadyForQuery).
            b'S' if self.copy_in => {
                shared.push_uncounted_sync(self.rfq_seq);
                Forward::Same
            }
            b'S' => {
                self.skipping = false;
                let end_guard = self.batch_guarded && !self.txn.explicit;
                self.batch_guarded = false;
                if !self.txn.explicit {
                    self.txn = Txn::default();
                }
                self.portals.retain(|k, _| !k.is_empty());
                if end_guard {
                    shared.push_guarded(self.rfq_seq, [(0, 0); 2], 1);
                }
                self.rfq_seq += 1;
                if end_guard {
                    let mut out = guard_messages(GUARD_END, &self.guard_end);
                    out.extend_from_slice(frame);
                    return Forward::Replace(out);
                }
                Forward::Same
            }
            b'F' => {
                self.rfq_seq += 1;
                Forward::Same
            }
            _ => Forward::Same,
        }
    }

    /// A message the rules would check but that is too big to hold (`len` bytes): refused
    /// with a clear error in its place; the relay drops its bytes as they arrive. Returns what
    /// to send upstream instead.
    pub(crate) fn on_oversized(&mut self, shared: &SessionShared, tag: u8, len: usize) -> Vec<u8> {
        let refusal = Refusal {
            code: PROGRAM_LIMIT_EXCEEDED,
            // Inference: DSQL's own limit on a statement's size is not documented (its rows
            // are at most 2 MiB, a transaction's changes 10 MiB); this one is ours.
            message: format!(
                "message of {len} bytes is over dsql-local's limit of {} MiB for a statement and its parameters; send less data per statement",
                MAX_CHECKED_MESSAGE >> 20
            ),
        };
        let extended = &b"dsql_local_refused"[..];
        match tag {
            // Query and FunctionCall are each answered with ReadyForQuery.
            b'Q' | b'F' => {
                let out = self.refuse(shared, refusal, None);
                self.after_refusal();
                self.rfq_seq += 1;
                out
            }
            // Not a Sync PostgreSQL would take: refuse, then a real Sync in its place.
            b'S' => {
                let mut out = self.refuse(shared, refusal, Some(extended));
                self.after_refusal();
                let sync = crate::wire::message(b'S', &[]);
                match self.on_message(shared, &sync) {
                    Forward::Same => out.extend_from_slice(&sync),
                    Forward::Replace(b) => out.extend_from_slice(&b),
                }
                out
            }
            _ if self.skipping => Vec::new(),
            _ => {
                let out = self.refuse(shared, refusal, Some(extended));
                self.after_refusal();
                out
            }
        }
    }

    /// A message the relay forwards without looking inside (CopyData counts towards the
    /// transaction's size).
    pub(crate) fn on_uninspected(&mut self, tag: u8, len: usize) {
        match tag {
            b'd' => self.txn.bytes += len as u64,
            // CopyDone, CopyFail: the copy is over; the next Sync counts again.
            b'c' | b'f' => self.copy_in = false,
            _ => {}
        }
    }

    fn poisoned_statement(
        &mut self,
        shared: &SessionShared,
        class: Option<Class>,
        parse_name: Option<&[u8]>,
    ) -> Option<Forward> {
        if !shared.poisoned.load(Ordering::Acquire) {
            return None;
        }
        match class {
            Some(Class::Rollback) => {
                shared.poisoned.store(false, Ordering::Release);
                self.txn = Txn::default();
                None
            }
            Some(Class::Commit) if parse_name.is_none() => {
                // PostgreSQL answers COMMIT of an aborted transaction with ROLLBACK: so do we.
                shared.poisoned.store(false, Ordering::Release);
                self.txn = Txn::default();
                Some(Forward::Replace(query_message("ROLLBACK")))
            }
            _ => {
                // The upstream transaction is still healthy: abort it for real, answering 25P02.
                shared.poisoned.store(false, Ordering::Release);
                self.after_refusal();
                let refusal = Refusal {
                    code: "25P02",
                    message: ABORTED.into(),
                };
                Some(Forward::Replace(self.refuse(shared, refusal, parse_name)))
            }
        }
    }

    fn on_query(&mut self, shared: &SessionShared, body: &[u8]) -> Forward {
        let Some((sql_bytes, _)) = cstr(body) else {
            return Forward::Same;
        };
        let sql = String::from_utf8_lossy(sql_bytes);
        let checked = dialect::check(&sql);
        let first = checked
            .as_ref()
            .ok()
            .and_then(|c| c.classes.first().copied());
        if let Some(f) = self.poisoned_statement(shared, first, None) {
            return f;
        }
        let checked = match checked {
            Ok(c) => c,
            Err(refusal) => {
                let out = self.refuse(shared, refusal, None);
                self.after_refusal();
                return Forward::Replace(out);
            }
        };
        let mut txn = self.txn.clone();
        let now = Instant::now();
        for class in &checked.classes {
            if let Err(refusal) = self.apply(&mut txn, *class, now) {
                let commit = *class == Class::Commit;
                let out = self.refuse(shared, refusal, None);
                self.after_refusal();
                if commit {
                    // A COMMIT refused for size ends the transaction, as DSQL's does: roll it
                    // back first, swallowing that answer.
                    shared.push(self.rfq_seq, Pending::Swallow);
                    self.rfq_seq += 1;
                    self.txn = Txn::default();
                    let mut both = query_message("ROLLBACK");
                    both.extend_from_slice(&out);
                    // The refusal's own answer comes after the ROLLBACK's ReadyForQuery.
                    self.requeue_last_after_swallow(shared);
                    return Forward::Replace(both);
                }
                return Forward::Replace(out);
            }
            if class.writes() {
                txn.bytes += sql.len() as u64;
            }
        }
        // A simple query outside a transaction block is its own implicit transaction.
        let was_explicit = self.txn.explicit;
        let implicit_write = !self.txn.explicit
            && !txn.explicit
            && checked.classes.iter().any(|c| c.writes())
            && !checked
                .classes
                .iter()
                .any(|c| matches!(c, Class::Begin | Class::Commit | Class::Rollback));
        if !txn.explicit {
            txn = Txn::default();
        }
        self.txn = txn;
        // Guards go into the client's query string (one transaction), the client's own bytes
        // kept as sent: (byte offset in the client's text, text to put there).
        let text = match &checked.rewritten {
            Some(sql) => sql.as_bytes(),
            None => sql_bytes,
        };
        let inserts: Vec<(usize, String)> = if let Some(guard) = &checked.guard {
            vec![(0, format!("{guard};"))]
        } else if implicit_write {
            vec![
                (0, format!("{};", self.guard_start)),
                // A newline ends a trailing `--` comment.
                (text.len(), format!("\n;{}", self.guard_end)),
            ]
        } else if let Some((after_begin, before_commit)) = explicit_write_span(&checked)
            && !was_explicit
            && checked.rewritten.is_none()
            && std::str::from_utf8(sql_bytes).is_ok()
        {
            // BEGIN ... COMMIT in one string: PostgreSQL commits before the gateway sees the
            // row counts, so the guards go right after BEGIN and right before COMMIT.
            vec![
                (after_begin, format!(";{}", self.guard_start)),
                (before_commit, format!("{};", self.guard_end)),
            ]
        } else {
            Vec::new()
        };
        if !inserts.is_empty() {
            let mut q = Vec::with_capacity(text.len() + 2 * self.guard_end.len());
            let mut moved = [(0u32, 0u32); 2];
            let mut copied = 0;
            let mut inserted_chars = 0usize;
            for (i, (at, with)) in inserts.iter().enumerate() {
                q.extend_from_slice(&text[copied..*at]);
                copied = *at;
                // Where the guard starts in the string PostgreSQL sees, in characters.
                let at_char =
                    String::from_utf8_lossy(&text[..*at]).chars().count() + inserted_chars;
                if let Some(m) = moved.get_mut(i) {
                    *m = (at_char as u32, with.len() as u32);
                }
                inserted_chars += with.len();
                q.extend_from_slice(with.as_bytes());
            }
            q.extend_from_slice(&text[copied..]);
            q.push(0);
            shared.push_guarded(self.rfq_seq, moved, 0);
            return Forward::Replace(crate::wire::message(b'Q', &q));
        }
        match checked.rewritten {
            Some(sql) => Forward::Replace(query_message(&sql)),
            None => Forward::Same,
        }
    }

    /// The last queued refusal was queued with the ROLLBACK's sequence number; its answer
    /// comes one ReadyForQuery later.
    fn requeue_last_after_swallow(&self, shared: &SessionShared) {
        if let Ok(mut q) = shared.pending.lock() {
            // Order in the queue: [.., Refuse(seq), Swallow(seq)] -> [.., Swallow(seq), Refuse(seq+1)]
            let n = q.len();
            if n >= 2 {
                q.swap(n - 2, n - 1);
                q[n - 1].0 += 1;
            }
        }
    }

    fn on_parse(&mut self, shared: &SessionShared, body: &[u8]) -> Forward {
        let Some((name, rest)) = cstr(body) else {
            return Forward::Same;
        };
        let Some((sql, params)) = cstr(rest) else {
            return Forward::Same;
        };
        let sql = String::from_utf8_lossy(sql);
        let checked = dialect::check(&sql);
        let first = checked
            .as_ref()
            .ok()
            .and_then(|c| c.classes.first().copied());
        if let Some(f) =
            self.poisoned_statement(shared, first.filter(|c| *c == Class::Rollback), Some(name))
        {
            return f;
        }
        match checked {
            Err(refusal) => {
                let out = self.refuse(shared, refusal, Some(name));
                self.after_refusal();
                Forward::Replace(out)
            }
            Ok(c) => {
                remember(
                    &mut self.statements,
                    name,
                    (
                        c.classes.first().copied().unwrap_or(Class::Other),
                        c.guard.map(Arc::from),
                    ),
                );
                match c.rewritten {
                    Some(sql) => {
                        let mut b = name.to_vec();
                        b.push(0);
                        b.extend_from_slice(sql.as_bytes());
                        b.push(0);
                        b.extend_from_slice(params);
                        Forward::Replace(crate::wire::message(b'P', &b))
                    }
                    None => Forward::Same,
                }
            }
        }
    }

    fn on_execute(&mut self, shared: &SessionShared, body: &[u8], frame: &[u8]) -> Forward {
        if self.skipping {
            return Forward::Same;
        }
        let Some((portal, _)) = cstr(body) else {
            return Forward::Same;
        };
        let (class, guard) = self
            .portals
            .get(portal)
            .cloned()
            .unwrap_or((Class::Other, None));
        if let Some(f) =
            self.poisoned_statement(shared, Some(class), Some(&b"dsql_local_refused"[..]))
        {
            return f;
        }
        let mut txn = self.txn.clone();
        match self.apply(&mut txn, class, Instant::now()) {
            Ok(()) => {
                let start_guard = class.writes() && !self.txn.explicit && !self.batch_guarded;
                self.txn = txn;
                // PostgreSQL ignores Sync until the copy ends: so must the predictions.
                self.copy_in = class == Class::CopyFrom;
                if start_guard {
                    // The first write of an implicit transaction: note the baseline first.
                    self.batch_guarded = true;
                    shared.push_guarded(self.rfq_seq, [(0, 0); 2], 1);
                    let mut out = guard_messages(GUARD_START, &self.guard_start);
                    out.extend_from_slice(frame);
                    return Forward::Replace(out);
                }
                if let Some(guard) = guard {
                    // A rule that needs the catalog: PostgreSQL checks it just before.
                    shared.push_guarded(self.rfq_seq, [(0, 0); 2], 1);
                    let mut out = guard_messages(GUARD_DDL, &guard);
                    out.extend_from_slice(frame);
                    return Forward::Replace(out);
                }
                Forward::Same
            }
            Err(refusal) => {
                // The portal runs nothing: a failing Parse makes the upstream discard until Sync.
                let out = self.refuse(shared, refusal, Some(&b"dsql_local_refused"[..]));
                self.after_refusal();
                Forward::Replace(out)
            }
        }
    }
}

/// For a query string that opens a transaction block and commits it, writing rows in between
/// and nothing outside it: (byte offset just after the BEGIN statement, byte offset where the
/// COMMIT statement starts).
fn explicit_write_span(checked: &dialect::Checked) -> Option<(usize, usize)> {
    let c = &checked.classes;
    let begin = c.iter().position(|k| *k == Class::Begin)?;
    let commit = c.iter().position(|k| *k == Class::Commit)?;
    let control = |k: &Class| matches!(k, Class::Begin | Class::Commit | Class::Rollback);
    let inside = c.get(begin + 1..commit)?;
    let only_one = c.iter().filter(|k| control(k)).count() == 2;
    let writes_outside = c[..begin]
        .iter()
        .chain(&c[commit + 1..])
        .any(|k| k.writes());
    if !only_one || writes_outside || !inside.iter().any(|k| k.writes()) {
        return None;
    }
    Some((checked.spans.get(begin)?.1, checked.spans.get(commit)?.0))
}

fn remember(map: &mut HashMap<Vec<u8>, Known>, name: &[u8], class: Known) {
    if name.len() > MAX_NAME_LEN {
        return;
    }
    if map.len() >= MAX_NAMES && !map.contains_key(name) {
        map.clear();
    }
    map.insert(name.to_vec(), class);
}

fn query_message(sql: &str) -> Vec<u8> {
    let mut body = sql.as_bytes().to_vec();
    body.push(0);
    crate::wire::message(b'Q', &body)
}

impl Refusal {
    fn unsupported_txn(message: &str) -> Self {
        Refusal {
            code: dialect::FEATURE_NOT_SUPPORTED,
            message: message.into(),
        }
    }
}

/// What the backend half does with one complete upstream message.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Backward {
    Same,
    Replace(Vec<u8>),
    Drop,
    /// These bytes, then the message as if `Same` (messages held back earlier).
    Before(Vec<u8>),
}

/// The backend half's rules for one session.
#[derive(Debug)]
pub(crate) struct BackendRules {
    limits: Limits,
    rfq_seen: u64,
    rows: u64,
    swallowing: bool,
    /// The row limit was crossed inside a transaction block: report `E` until it ends.
    aborted_by_us: bool,
    /// In a guarded implicit transaction: the last CloseComplete/ParseComplete/BindComplete
    /// (at most three), held until it is known whether they answer the end guard.
    held: Vec<Vec<u8>>,
    /// A guarded implicit transaction crossed the row limit: everything up to ReadyForQuery
    /// is dropped (the end guard rolls it back).
    discarding: bool,
    /// A CopyInResponse came: the next CommandComplete (`COPY n`) counts written rows.
    copy_from: bool,
    /// Extended-protocol guards of the current batch whose answer came.
    guards_answered: u32,
    /// A CopyInResponse came in the current batch.
    copy_started: bool,
}

impl BackendRules {
    pub(crate) fn new(limits: Limits) -> Self {
        BackendRules {
            limits,
            rfq_seen: 0,
            rows: 0,
            swallowing: false,
            aborted_by_us: false,
            held: Vec::new(),
            discarding: false,
            copy_from: false,
            guards_answered: 0,
            copy_started: false,
        }
    }

    /// Whether a message with this tag may need a change (the relay copies the others as bytes).
    /// The small completions are held back in guarded transactions (see [`Self::held`]).
    pub(crate) fn interesting(tag: u8) -> bool {
        matches!(tag, b'E' | b'C' | b'Z' | b'1' | b'2' | b'3')
    }

    /// Decides what to do with one upstream message (`frame`: whole, or only its 5-byte header
    /// for the messages [`Self::interesting`] does not name).
    pub(crate) fn on_message(&mut self, shared: &SessionShared, frame: &[u8]) -> Backward {
        match frame[0] {
            b'G' => {
                self.copy_from = true;
                self.copy_started = true;
            }
            b'Z' => self.guards_answered = 0,
            _ => {}
        }
        if !self.swallowing
            && let Some(guarded) = shared.guarded_at(self.rfq_seen)
        {
            return self.on_guarded(shared, frame, guarded);
        }
        if matches!(frame[0], b'1' | b'2' | b'3') && !self.swallowing {
            // Only guarded batches hold these back; nothing else to do with them.
            return Backward::Same;
        }
        self.on_plain(shared, frame)
    }

    /// A message of a guarded implicit transaction (see the module docs).
    fn on_guarded(&mut self, shared: &SessionShared, frame: &[u8], guarded: Guarded) -> Backward {
        let tag = frame[0];
        let body = &frame[5..];
        let moved = guarded.moved;
        if self.discarding {
            if tag != b'Z' {
                return Backward::Drop;
            }
            self.discarding = false;
            self.held.clear();
            return self.on_plain(shared, frame);
        }
        let decided = match tag {
            // Held only while a guard's answer is still to come (so more output surely
            // follows): a client waiting on a Flush for its own completions never waits on us.
            b'1' | b'2' | b'3' if guarded.extended > self.guards_answered => {
                self.held.push(frame.to_vec());
                return if self.held.len() > 3 {
                    Backward::Replace(self.held.remove(0))
                } else {
                    Backward::Drop
                };
            }
            // A guard's answer: the client never sees it (its own DO statements are refused).
            b'C' if command_tag(body) == b"DO" => {
                self.guards_answered += 1;
                self.drop_guard_tail();
                Backward::Drop
            }
            // The end guard found more rows than the gateway counted (rows written by
            // statements whose tags carry no count): its error is DSQL's, pass it on.
            b'E' if let Some(kind) = guard_error(body) => {
                self.guards_answered += 1;
                if kind == GuardError::Refusal {
                    // A refused statement (a primary-key column's drop), for the counters.
                    shared.refused.fetch_add(1, Ordering::Relaxed);
                }
                self.drop_guard_tail();
                self.discarding = true;
                Backward::Same
            }
            b'C' => {
                let rows = modified_rows(body, std::mem::take(&mut self.copy_from));
                self.rows += rows;
                if rows > 0 && self.rows > self.limits.max_rows {
                    // The end guard rolls the transaction back; the client sees DSQL's error
                    // here, at the statement that crossed, and nothing after it.
                    self.rows = 0;
                    self.discarding = true;
                    Backward::Replace(crate::wire::error_response(
                        "ERROR",
                        PROGRAM_LIMIT_EXCEEDED,
                        ROW_LIMIT,
                        None,
                    ))
                } else {
                    Backward::Same
                }
            }
            b'E' if moved[0].1 > 0 => match self.on_plain(shared, frame) {
                Backward::Same => match shift_position(body, moved) {
                    Some(fixed) => Backward::Replace(fixed),
                    None => Backward::Same,
                },
                other => other,
            },
            _ => self.on_plain(shared, frame),
        };
        if self.held.is_empty() {
            return decided;
        }
        let mut held: Vec<u8> = self.held.drain(..).flatten().collect();
        match decided {
            Backward::Same => Backward::Before(held),
            Backward::Before(b) => {
                held.extend_from_slice(&b);
                Backward::Before(held)
            }
            Backward::Replace(b) => {
                held.extend_from_slice(&b);
                Backward::Replace(held)
            }
            Backward::Drop => Backward::Replace(held),
        }
    }

    /// Forgets the held CloseComplete, ParseComplete, BindComplete that answered a guard.
    fn drop_guard_tail(&mut self) {
        let n = self.held.len();
        if n >= 3
            && self.held[n - 3][0] == b'3'
            && self.held[n - 2][0] == b'1'
            && self.held[n - 1][0] == b'2'
        {
            self.held.truncate(n - 3);
        }
    }

    fn on_plain(&mut self, shared: &SessionShared, frame: &[u8]) -> Backward {
        let tag = frame[0];
        let body = &frame[5..];
        if self.swallowing {
            if tag == b'Z' {
                self.swallowing = false;
                self.rfq_seen += 1;
            }
            return Backward::Drop;
        }
        if let Ok(mut q) = shared.pending.lock() {
            while q.front().is_some_and(|(seq, _)| *seq < self.rfq_seen) {
                q.pop_front();
            }
            if let Some((seq, Pending::Swallow)) = q.front()
                && *seq == self.rfq_seen
            {
                q.pop_front();
                if tag == b'Z' {
                    self.rfq_seen += 1;
                } else {
                    self.swallowing = true;
                }
                return Backward::Drop;
            }
            if tag == b'E' && let Some(pos) = q.iter().position(|(seq, p)| {
                *seq == self.rfq_seen
                    && matches!(p, Pending::Refuse { marker, .. } if is_marker_error(body, marker))
            }) {
                let (_, p) = q.remove(pos).expect("position is in range");
                // Earlier refusals at the same point were skipped by the upstream.
                for _ in 0..pos {
                    q.pop_front();
                }
                if let Pending::Refuse { refusal, .. } = p {
                    return Backward::Replace(crate::wire::error_response(
                        "ERROR",
                        refusal.code,
                        &refusal.message,
                        None,
                    ));
                }
            }
        }
        match tag {
            b'C' => {
                let rows = modified_rows(body, std::mem::take(&mut self.copy_from));
                if rows > 0 {
                    self.rows += rows;
                    if self.rows > self.limits.max_rows {
                        self.rows = 0;
                        self.aborted_by_us = true;
                        shared.poisoned.store(true, Ordering::Release);
                        return Backward::Replace(crate::wire::error_response(
                            "ERROR",
                            PROGRAM_LIMIT_EXCEEDED,
                            ROW_LIMIT,
                            None,
                        ));
                    }
                }
                Backward::Same
            }
            b'Z' => {
                let copy_started = std::mem::take(&mut self.copy_started);
                if !shared.answers_uncounted_sync(self.rfq_seen, copy_started) {
                    self.rfq_seen += 1;
                }
                let status = body.first().copied().unwrap_or(b'I');
                if status == b'I' {
                    self.rows = 0;
                    self.aborted_by_us = false;
                    // Outside a transaction block the crossing statement ended its own
                    // transaction: nothing is left to abort.
                    shared.poisoned.store(false, Ordering::Release);
                } else if status == b'T'
                    && self.aborted_by_us
                    && shared.poisoned.load(Ordering::Acquire)
                {
                    return Backward::Replace(crate::wire::message(b'Z', b"E"));
                } else if status != b'T' {
                    self.aborted_by_us = false;
                }
                Backward::Same
            }
            _ => Backward::Same,
        }
    }
}

/// Rows written according to a CommandComplete tag (`INSERT 0 n`, `UPDATE n`, `DELETE n`,
/// `MERGE n`, and `COPY n` when it answers a copy in: `copy_from`).
fn modified_rows(body: &[u8], copy_from: bool) -> u64 {
    let tag = cstr(body).map(|(t, _)| t).unwrap_or(body);
    let Ok(tag) = std::str::from_utf8(tag) else {
        return 0;
    };
    let mut words = tag.split(' ');
    match words.next() {
        Some("COPY") if copy_from => words.next_back().and_then(|n| n.parse().ok()).unwrap_or(0),
        Some("INSERT" | "UPDATE" | "DELETE" | "MERGE") => {
            words.next_back().and_then(|n| n.parse().ok()).unwrap_or(0)
        }
        _ => 0,
    }
}

/// The tag of a CommandComplete body, without its NUL.
fn command_tag(body: &[u8]) -> &[u8] {
    cstr(body).map(|(t, _)| t).unwrap_or(body)
}

/// The errors guard statements raise.
#[derive(Debug, PartialEq, Eq)]
enum GuardError {
    /// DSQL's row-limit error (the end guard's).
    RowLimit,
    /// A refused statement (a primary-key column's drop).
    Refusal,
}

/// Which guard's error an ErrorResponse body is, if any.
fn guard_error(body: &[u8]) -> Option<GuardError> {
    let fields = crate::wire::error_fields(body);
    let field = |k: u8| {
        fields
            .iter()
            .find(|(t, _)| *t == k)
            .map(|(_, v)| v.as_str())
    };
    match (field(b'C'), field(b'M')) {
        (Some(PROGRAM_LIMIT_EXCEEDED), Some(ROW_LIMIT)) => Some(GuardError::RowLimit),
        (Some(dialect::FEATURE_NOT_SUPPORTED), Some(m))
            if m.starts_with(dialect::PRIMARY_KEY_COLUMN) =>
        {
            Some(GuardError::Refusal)
        }
        _ => None,
    }
}

/// An ErrorResponse whose position (`P`, in characters of the query string) points into the
/// client's text again, with the guards put into it (`moved`) taken out.
fn shift_position(body: &[u8], moved: [(u32, u32); 2]) -> Option<Vec<u8>> {
    let fields = crate::wire::error_fields(body);
    let pos: u32 = fields.iter().find(|(t, _)| *t == b'P')?.1.parse().ok()?;
    // 0-based character the position names, minus every guard wholly before it.
    let at = pos.saturating_sub(1);
    let before: u32 = moved
        .iter()
        .filter(|(start, len)| *len > 0 && start + len <= at)
        .map(|(_, len)| len)
        .sum();
    let fixed = (pos - before).max(1).to_string();
    let mut out = Vec::with_capacity(body.len());
    for (t, v) in &fields {
        out.push(*t);
        out.extend_from_slice(if *t == b'P' {
            fixed.as_bytes()
        } else {
            v.as_bytes()
        });
        out.push(0);
    }
    out.push(0);
    Some(crate::wire::message(b'E', &out))
}

/// Whether an ErrorResponse body is PostgreSQL's syntax error at `marker`.
fn is_marker_error(body: &[u8], marker: &str) -> bool {
    crate::wire::error_fields(body)
        .iter()
        .any(|(t, v)| *t == b'M' && *v == format!("syntax error at or near \"{marker}\""))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_complete_tags_give_rows() {
        assert_eq!(modified_rows(b"INSERT 0 12\0", false), 12);
        assert_eq!(modified_rows(b"UPDATE 3\0", false), 3);
        assert_eq!(modified_rows(b"SELECT 5\0", false), 0);
        assert_eq!(modified_rows(b"\xff\0", false), 0);
        assert_eq!(modified_rows(b"COPY 7\0", true), 7);
        assert_eq!(modified_rows(b"COPY 7\0", false), 0, "COPY TO reads rows");
    }

    #[test]
    fn marker_errors_are_recognised() {
        let e = crate::wire::error_response(
            "ERROR",
            "42601",
            "syntax error at or near \"dsql_local_refused_3\"",
            None,
        );
        assert!(is_marker_error(&e[5..], "dsql_local_refused_3"));
        assert!(!is_marker_error(&e[5..], "dsql_local_refused_4"));
    }
}
