//! Operator rules (seed 000 §4.2): which replication mode each operation gets. A rule
//! file is TOML an operator can read and edit; the first matching rule wins, else the
//! default mode. A bad file is refused whole, with the line and column at fault.
//!
//! ```toml
//! default = "async"            # mode when no rule matches
//! when_peer_down = "continue"  # default for sync rules: continue | fail
//!
//! [[rule]]
//! name = "audit"
//! kind = "delete"              # insert update delete commit ddl, or a list
//! table = "audit_*"
//! mode = "skip"
//!
//! [[rule]]
//! name = "billing"
//! kind = "commit"
//! table = "billing_*"          # exact name or glob
//! group = "charging"           # also: user = "…"
//! source = "10.0.0.0/8"        # exact address or CIDR
//! time = "08:00-20:00"         # time-of-day window, UTC; may wrap midnight
//! mode = "sync"
//! when_peer_down = "fail"
//! ```

use std::fmt;
use std::net::IpAddr;
use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;

use strum::VariantNames;

use ipnet::IpNet;
use kirikae_engine::{Operation, OperationKind, SessionInfo};
use serde::Deserialize;
use smallvec::SmallVec;
use toml::Spanned;

use crate::decision_cache::{self, Asked, Question};
use crate::error::{ReplicateError, Result};
use crate::mode::{Mode, WhenPeerDown};

/// What an access is, for rule matching.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, strum::Display, strum::EnumString, strum::VariantNames,
)]
#[strum(serialize_all = "lowercase")]
pub enum AccessKind {
    /// A new record.
    Insert,
    /// A changed record.
    Update,
    /// A removed record.
    Delete,
    /// A transaction's commit (decides the mode of the whole transaction).
    Commit,
    /// A catalog change (a table created or dropped, a restructure begun or
    /// switched): see [`Operation::Ddl`]. Reads are not replicated, so no kind
    /// names them.
    Ddl,
}

impl From<OperationKind> for AccessKind {
    fn from(k: OperationKind) -> AccessKind {
        match k {
            OperationKind::Insert => AccessKind::Insert,
            OperationKind::Update => AccessKind::Update,
            OperationKind::Delete => AccessKind::Delete,
            OperationKind::Ddl => AccessKind::Ddl,
        }
    }
}

/// Seconds since midnight, UTC.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct TimeOfDay(pub u32);

impl TimeOfDay {
    /// The current time of day (UTC).
    pub fn now() -> TimeOfDay {
        let secs = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        TimeOfDay((secs % 86_400) as u32)
    }

    /// `hours:minutes`.
    pub fn hm(hours: u32, minutes: u32) -> TimeOfDay {
        TimeOfDay((hours * 3600 + minutes * 60) % 86_400)
    }
}

/// A window of the day, start inclusive, end exclusive; wraps midnight if end < start.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct TimeWindow {
    start: TimeOfDay,
    end: TimeOfDay,
}

impl TimeWindow {
    fn contains(&self, t: TimeOfDay) -> bool {
        if self.start <= self.end {
            self.start <= t && t < self.end
        } else {
            t >= self.start || t < self.end
        }
    }
}

impl FromStr for TimeWindow {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<TimeWindow, String> {
        let bad = || format!("time window `{s}` is not HH:MM-HH:MM");
        let (a, b) = s.split_once('-').ok_or_else(bad)?;
        let parse = |hm: &str| -> std::result::Result<TimeOfDay, String> {
            let (h, m) = hm.trim().split_once(':').ok_or_else(bad)?;
            let (h, m): (u32, u32) = (h.parse().map_err(|_| bad())?, m.parse().map_err(|_| bad())?);
            if h > 24 || m > 59 || (h == 24 && m != 0) {
                return Err(format!("`{hm}` is not a time of day"));
            }
            Ok(TimeOfDay::hm(h, m))
        };
        let window = TimeWindow {
            start: parse(a)?,
            end: parse(b)?,
        };
        if window.start == window.end {
            return Err(format!("time window `{s}` is empty"));
        }
        Ok(window)
    }
}

/// One access to decide a mode for.
#[derive(Clone, Copy, Debug)]
pub struct Access<'a> {
    /// What it is.
    pub kind: AccessKind,
    /// The table, if the access concerns one.
    pub table: Option<&'a str>,
    /// Who does it.
    pub session: &'a SessionInfo,
    /// When.
    pub time: TimeOfDay,
}

/// One rule: conditions (all must hold; an absent one always holds) and a mode.
#[derive(Clone, Debug)]
pub struct Rule {
    /// The rule's name (its position if unnamed), for events and logs.
    pub name: Arc<str>,
    /// 1-based line of the rule in its file.
    pub line: usize,
    kinds: Vec<AccessKind>,
    table: Option<glob::Pattern>,
    user: Option<String>,
    group: Option<String>,
    source: Option<IpNet>,
    time: Option<TimeWindow>,
    /// The mode it gives.
    pub mode: Mode,
    /// What a sync operation under this rule does while the peer is down.
    pub when_peer_down: WhenPeerDown,
}

impl Rule {
    /// Whether the rule holds for every access to `table` (no condition but, perhaps,
    /// the table).
    fn holds_for_all_of(&self, table: &str) -> bool {
        self.kinds.is_empty()
            && self.table.as_ref().is_none_or(|p| p.matches(table))
            && self.user.is_none()
            && self.group.is_none()
            && self.source.is_none()
            && self.time.is_none()
    }

    /// Whether the rule may hold for some access to `table`.
    fn may_hold_for(&self, table: &str) -> bool {
        self.table.as_ref().is_none_or(|p| p.matches(table))
    }

    /// Whether every condition of the rule holds for `access`.
    pub fn matches(&self, access: &Access<'_>) -> bool {
        (self.kinds.is_empty() || self.kinds.contains(&access.kind))
            && self
                .table
                .as_ref()
                .is_none_or(|p| access.table.is_some_and(|t| p.matches(t)))
            && self.user.as_ref().is_none_or(|u| *u == access.session.user)
            && self
                .group
                .as_ref()
                .is_none_or(|g| *g == access.session.group)
            && self
                .source
                .is_none_or(|net| access.session.source.is_some_and(|ip| net.contains(&ip)))
            && self.time.is_none_or(|w| w.contains(access.time))
    }
}

/// The mode chosen for an access or a transaction, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    /// The mode.
    pub mode: Mode,
    /// What to do if the peer is down and the mode is sync.
    pub when_peer_down: WhenPeerDown,
    /// The deciding rule's name; `None` for the default. Shared with the rule set:
    /// deciding allocates nothing (every commit decides).
    pub rule: Option<Arc<str>>,
}

/// A commit's decision as the gate needs it: [`Decision`] with the deciding rule's
/// index instead of its name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Choice {
    pub mode: Mode,
    pub when_peer_down: WhenPeerDown,
    /// The deciding rule's index; `None` for the default.
    rule: Option<usize>,
}

/// For each operation of a transaction, whether it is shipped.
pub(crate) type Shipped = SmallVec<[bool; 4]>;

/// A validated rule set.
#[derive(Clone, Debug)]
pub struct RuleSet {
    rules: Vec<Rule>,
    default: Mode,
    default_when_peer_down: WhenPeerDown,
    /// Whether any rule has a time window (then decisions depend on the clock).
    has_time_windows: bool,
    /// Unique to each parsed rule set (its clones share it): the decision cache
    /// (`decision_cache.rs`) answers for one rule set only.
    id: u64,
}

/// The identity of the next rule set parsed.
static NEXT_RULES_ID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

impl fmt::Display for RuleSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "default {}", self.default)?;
        for r in &self.rules {
            writeln!(f, "line {}: {} -> {}", r.line, r.name, r.mode)?;
        }
        Ok(())
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    default: Option<Spanned<String>>,
    when_peer_down: Option<Spanned<String>>,
    #[serde(default, rename = "rule")]
    rules: Vec<Spanned<RawRule>>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    name: Option<String>,
    kind: Option<Spanned<OneOrMany>>,
    table: Option<Spanned<String>>,
    user: Option<String>,
    group: Option<String>,
    source: Option<Spanned<String>>,
    time: Option<Spanned<String>>,
    mode: Spanned<String>,
    when_peer_down: Option<Spanned<String>>,
}

/// Turns byte offsets into 1-based line and column for errors and rule lines.
///
/// The offsets of line starts are collected once, so that each lookup is a binary
/// search plus the length of one line: a file of 40,000 rules parses in linear time
/// (counting newlines from the start for every rule made it quadratic).
struct Positions<'a> {
    text: &'a str,
    source_name: &'a str,
    /// Byte offset of the first character of each line, in order; starts with 0.
    line_starts: Vec<usize>,
}

impl<'a> Positions<'a> {
    fn new(text: &'a str, source_name: &'a str) -> Positions<'a> {
        let line_starts = std::iter::once(0)
            .chain(text.match_indices('\n').map(|(i, _)| i + 1))
            .collect();
        Positions {
            text,
            source_name,
            line_starts,
        }
    }

    fn line_col(&self, offset: usize) -> (usize, usize) {
        let mut end = offset.min(self.text.len());
        while !self.text.is_char_boundary(end) {
            end -= 1;
        }
        // The last line start at or before `end` (there is always one: 0).
        let line = self.line_starts.partition_point(|&start| start <= end);
        let start = self.line_starts[line.saturating_sub(1)];
        let column = self.text[start..end].chars().count() + 1;
        (line, column)
    }

    fn error(&self, offset: usize, message: impl Into<String>) -> ReplicateError {
        let (line, column) = self.line_col(offset);
        ReplicateError::Rules {
            source_name: self.source_name.to_owned(),
            line,
            column,
            message: message.into(),
        }
    }

    /// `value` as one of `T`'s names; the error lists them.
    fn parse<T: FromStr + VariantNames>(&self, value: &Spanned<String>, what: &str) -> Result<T> {
        self.parse_name(value.get_ref(), value.span().start, what)
    }

    fn parse_name<T: FromStr + VariantNames>(
        &self,
        name: &str,
        offset: usize,
        what: &str,
    ) -> Result<T> {
        name.parse().map_err(|_| {
            let names = T::VARIANTS.join(", ");
            self.error(offset, format!("unknown {what} `{name}` ({names})"))
        })
    }
}

impl RuleSet {
    /// The time of day to decide with now: the clock's, or midnight when no rule
    /// has a time window (the answer is the same at any hour, and every commit
    /// decides: the clock is not read for nothing).
    pub fn time_of_day_now(&self) -> TimeOfDay {
        if self.has_time_windows {
            TimeOfDay::now()
        } else {
            TimeOfDay(0)
        }
    }

    /// Parses and validates a rule file's text; `source_name` names it in errors.
    pub fn parse(text: &str, source_name: &str) -> Result<RuleSet> {
        let at = Positions::new(text, source_name);
        let raw: RawFile = toml::from_str(text).map_err(|e| {
            let offset = e.span().map_or(0, |s| s.start);
            at.error(offset, e.message().trim().to_owned())
        })?;
        let default = match &raw.default {
            Some(m) => at.parse(m, "mode")?,
            None => Mode::Async,
        };
        let default_when_peer_down = match &raw.when_peer_down {
            Some(w) => at.parse(w, "peer-down action")?,
            None => WhenPeerDown::Continue,
        };
        let mut rules = Vec::with_capacity(raw.rules.len());
        for (i, spanned) in raw.rules.iter().enumerate() {
            let line = at.line_col(spanned.span().start).0;
            let r = spanned.get_ref();
            let kinds = match &r.kind {
                None => Vec::new(),
                Some(k) => {
                    let names = match k.get_ref() {
                        OneOrMany::One(s) => vec![s.clone()],
                        OneOrMany::Many(v) => v.clone(),
                    };
                    names
                        .iter()
                        .map(|n| at.parse_name(n, k.span().start, "kind"))
                        .collect::<Result<Vec<AccessKind>>>()?
                }
            };
            let table = r
                .table
                .as_ref()
                .map(|t| {
                    glob::Pattern::new(t.get_ref()).map_err(|e| {
                        at.error(
                            t.span().start,
                            format!("table pattern `{}`: {e}", t.get_ref()),
                        )
                    })
                })
                .transpose()?;
            let source = r
                .source
                .as_ref()
                .map(|s| parse_source(s.get_ref()).map_err(|e| at.error(s.span().start, e)))
                .transpose()?;
            let time = r
                .time
                .as_ref()
                .map(|t| {
                    t.get_ref()
                        .parse::<TimeWindow>()
                        .map_err(|e| at.error(t.span().start, e))
                })
                .transpose()?;
            rules.push(Rule {
                name: r
                    .name
                    .clone()
                    .unwrap_or_else(|| format!("rule {}", i + 1))
                    .into(),
                line,
                kinds,
                table,
                user: r.user.clone(),
                group: r.group.clone(),
                source,
                time,
                mode: at.parse(&r.mode, "mode")?,
                when_peer_down: match &r.when_peer_down {
                    Some(w) => at.parse(w, "peer-down action")?,
                    None => default_when_peer_down,
                },
            });
        }
        Ok(RuleSet {
            has_time_windows: rules.iter().any(|r| r.time.is_some()),
            rules,
            default,
            default_when_peer_down,
            id: NEXT_RULES_ID.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
        })
    }

    /// Reads and parses a rule file.
    pub fn load(path: &Path) -> Result<RuleSet> {
        let text = std::fs::read_to_string(path).map_err(|source| ReplicateError::RulesIo {
            path: path.display().to_string(),
            source,
        })?;
        RuleSet::parse(&text, &path.display().to_string())
    }

    /// The rules, in file order.
    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    /// The mode when no rule matches.
    pub fn default_mode(&self) -> Mode {
        self.default
    }

    /// Whether no access to `table` is ever replicated: the first rule that may hold
    /// for it and gives a mode other than skip comes after one that skips every
    /// access to it (or none does, and the default is skip). A resync leaves such a
    /// table out of its copy.
    pub fn never_replicates(&self, table: &str) -> bool {
        for rule in self.rules.iter().filter(|r| r.may_hold_for(table)) {
            if rule.holds_for_all_of(table) {
                return rule.mode == Mode::Skip;
            }
            if rule.mode != Mode::Skip {
                return false;
            }
        }
        self.default == Mode::Skip
    }

    /// The first matching rule's decision, else the default.
    pub fn decide(&self, access: &Access<'_>) -> Decision {
        self.decision_of(self.rules.iter().position(|r| r.matches(access)))
    }

    /// The decision of the rule at `index`, or the default's.
    fn decision_of(&self, index: Option<usize>) -> Decision {
        match index.and_then(|i| self.rules.get(i)) {
            Some(r) => Decision {
                mode: r.mode,
                when_peer_down: r.when_peer_down,
                rule: Some(Arc::clone(&r.name)),
            },
            None => Decision {
                mode: self.default,
                when_peer_down: self.default_when_peer_down,
                rule: None,
            },
        }
    }

    /// The index of the first rule holding for `access` (of kind `commit` only,
    /// for [`Question::CommitRule`]): through this thread's decision cache when the
    /// rule set is large enough for a lookup to beat a scan.
    fn first_rule(&self, question: Question, access: &Access<'_>) -> Option<usize> {
        let scan = || {
            self.rules.iter().position(|r| {
                (question != Question::CommitRule || r.kinds.contains(&AccessKind::Commit))
                    && r.matches(access)
            })
        };
        if self.rules.len() < decision_cache::RULES_MIN {
            return scan();
        }
        let asked = Asked {
            question,
            table: access.table,
            session: access.session,
            time: if self.has_time_windows {
                access.time.0
            } else {
                0
            },
        };
        decision_cache::first_rule(self.id, &asked, scan)
    }

    /// The mode and peer-down action of the rule at `index`, or the default's.
    /// The decision `choice` stands for, with its rule's name.
    fn decision_from(&self, choice: Choice) -> Decision {
        Decision {
            mode: choice.mode,
            when_peer_down: choice.when_peer_down,
            rule: choice
                .rule
                .and_then(|i| self.rules.get(i))
                .map(|r| Arc::clone(&r.name)),
        }
    }

    fn modes_of(&self, index: Option<usize>) -> (Mode, WhenPeerDown) {
        match index.and_then(|i| self.rules.get(i)) {
            Some(r) => (r.mode, r.when_peer_down),
            None => (self.default, self.default_when_peer_down),
        }
    }

    /// The mode of a whole transaction. A rule of kind `commit` matching the commit
    /// (for any table the transaction writes, or with no table condition) decides it.
    /// Otherwise the strongest mode among its operations wins, and a sync transaction
    /// fails while the peer is down if any of its sync operations' rules says `fail`.
    pub fn decide_transaction(
        &self,
        operations: &[Operation],
        session: &SessionInfo,
        time: TimeOfDay,
    ) -> Decision {
        let choice = self.decide_shipment(operations, session, time, &mut Shipped::new());
        self.decision_from(choice)
    }

    /// [`decide_transaction`](RuleSet::decide_transaction), also saying which
    /// operations are shipped: all of them when a commit rule decided, otherwise those
    /// whose own rule is not `skip` (a table that is not replicated stays local even
    /// inside a replicated transaction).
    pub fn decide_operations(
        &self,
        operations: &[Operation],
        session: &SessionInfo,
        time: TimeOfDay,
    ) -> (Decision, Vec<bool>) {
        let mut shipped = Shipped::new();
        let choice = self.decide_shipment(operations, session, time, &mut shipped);
        (self.decision_from(choice), shipped.into_vec())
    }

    /// [`decide_operations`](RuleSet::decide_operations) for a commit: the mode and
    /// what to do while the peer is down, without the rule's name (a reference count
    /// that every committing thread would otherwise touch), and the shipped flags
    /// without an allocation for a transaction of up to four operations.
    pub(crate) fn decide_shipment(
        &self,
        operations: &[Operation],
        session: &SessionInfo,
        time: TimeOfDay,
        shipped: &mut Shipped,
    ) -> Choice {
        let commit = |table| Access {
            kind: AccessKind::Commit,
            table,
            session,
            time,
        };
        // The first commit rule holding for the commit itself or for any table it
        // writes: the least of the first ones for each.
        let commit_rule = std::iter::once(None)
            .chain(operations.iter().map(|op| Some(op.table())))
            .filter_map(|table| self.first_rule(Question::CommitRule, &commit(table)))
            .min()
            .and_then(|i| Some((i, self.rules.get(i)?)));
        if let Some((i, r)) = commit_rule {
            shipped.extend(operations.iter().map(|_| r.mode != Mode::Skip));
            return Choice {
                mode: r.mode,
                when_peer_down: r.when_peer_down,
                rule: Some(i),
            };
        }
        // The strongest operation's rule (its index, or the default's: None),
        // made a decision once at the end: no reference count is touched per
        // operation.
        let mut strongest: Option<(Mode, WhenPeerDown, Option<usize>)> = None;
        let mut fail_if_down = false;
        for op in operations {
            let kind = AccessKind::from(op.kind());
            let access = Access {
                kind,
                table: Some(op.table()),
                session,
                time,
            };
            let index = self.first_rule(Question::Operation(kind), &access);
            let (mode, when_peer_down) = self.modes_of(index);
            fail_if_down |= mode == Mode::Sync && when_peer_down == WhenPeerDown::Fail;
            shipped.push(mode != Mode::Skip);
            if strongest.is_none_or(|(m, _, _)| mode > m) {
                strongest = Some((mode, when_peer_down, index));
            }
        }
        let mut choice = match strongest {
            Some((mode, when_peer_down, rule)) => Choice {
                mode,
                when_peer_down,
                rule,
            },
            None => Choice {
                mode: Mode::Skip,
                when_peer_down: self.default_when_peer_down,
                rule: None,
            },
        };
        if fail_if_down {
            choice.when_peer_down = WhenPeerDown::Fail;
        }
        choice
    }
}

fn parse_source(s: &str) -> std::result::Result<IpNet, String> {
    if let Ok(net) = s.parse::<IpNet>() {
        return Ok(net.trunc());
    }
    s.parse::<IpAddr>()
        .map(IpNet::from)
        .map_err(|_| format!("source `{s}` is neither an address nor a CIDR block"))
}
