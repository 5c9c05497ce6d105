//! The queue people read: alerts and incidents ranked by score (highest
//! first; ties by latest activity, then id), filtered, paginated with an
//! opaque token that resumes after the last item of the previous page.

use serde::{Deserialize, Serialize};

use crate::case::Case;
use crate::error::TriageError;
use crate::finding::{Entity, Severity};
use crate::glob::Glob;
use crate::group::Alert;
use crate::ids::{AlertId, CaseId, IncidentId};
use crate::incident::Incident;
use crate::score::Score;
use crate::triage::Triage;

/// Page size when none is asked for.
pub const DEFAULT_PAGE_SIZE: u32 = 100;
/// Largest page (larger requests get this many).
pub const MAX_PAGE_SIZE: u32 = 1_000;

/// Which cases to list.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Kinds {
    /// Alerts and incidents, ranked together.
    #[default]
    Both,
    /// Alerts only.
    Alerts,
    /// Incidents only.
    Incidents,
}

/// A state to filter on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum StateFilter {
    /// Open.
    Open,
    /// Closed, by anyone.
    Closed,
    /// Closed by a suppression.
    AutoClosed,
}

/// A listing request. Every filter given must match.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Query {
    /// Alerts, incidents or both.
    pub kinds: Kinds,
    /// Only this state. Without it: open only, or everything with
    /// `include_closed`.
    pub state: Option<StateFilter>,
    /// Include closed ones (when no `state` is given).
    pub include_closed: bool,
    /// Severity at least this.
    pub min_severity: Option<Severity>,
    /// An entity: `kind:value` or a bare value (`ws01`), ignoring case;
    /// matches the case's entity or any entity of an alert.
    pub entity: Option<String>,
    /// Rule id pattern (glob); an incident matches if any of its rules does.
    pub rule: Option<String>,
    /// Assignee (exact, ignoring case).
    pub assignee: Option<String>,
    /// Items per page: default [`DEFAULT_PAGE_SIZE`], at most [`MAX_PAGE_SIZE`].
    pub page_size: u32,
    /// `next_page_token` of the previous page.
    pub page_token: Option<String>,
}

/// An alert or an incident in a listing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CaseView<'a> {
    /// An alert.
    Alert(&'a Alert),
    /// An incident.
    Incident(&'a Incident),
}

impl CaseView<'_> {
    /// Its id.
    pub fn id(&self) -> CaseId {
        match self {
            CaseView::Alert(a) => CaseId::Alert(a.id),
            CaseView::Incident(i) => CaseId::Incident(i.id),
        }
    }

    /// Its score.
    pub fn score(&self) -> Score {
        match self {
            CaseView::Alert(a) => a.score,
            CaseView::Incident(i) => i.score,
        }
    }

    /// Its latest finding (event time).
    pub fn last_seen_ms(&self) -> i64 {
        match self {
            CaseView::Alert(a) => a.last_seen_ms,
            CaseView::Incident(i) => i.last_seen_ms,
        }
    }

    /// Its severity.
    pub fn severity(&self) -> Severity {
        match self {
            CaseView::Alert(a) => a.severity,
            CaseView::Incident(i) => i.severity,
        }
    }

    /// Its human side.
    pub fn case(&self) -> &Case {
        match self {
            CaseView::Alert(a) => &a.case,
            CaseView::Incident(i) => &i.case,
        }
    }

    fn rank(&self) -> Rank {
        Rank {
            score: self.score(),
            last_seen_ms: self.last_seen_ms(),
            id: self.id(),
        }
    }
}

/// One page of a listing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Page<'a> {
    /// The items, best first.
    pub items: Vec<CaseView<'a>>,
    /// Pass as `page_token` for the next page; `None` on the last.
    pub next_page_token: Option<String>,
    /// How many items match in all.
    pub total: usize,
}

/// Position in the ranking: higher score first, then later activity, then id.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Rank {
    score: Score,
    last_seen_ms: i64,
    id: CaseId,
}

impl Rank {
    fn key(&self) -> (std::cmp::Reverse<Score>, std::cmp::Reverse<i64>, CaseId) {
        (
            std::cmp::Reverse(self.score),
            std::cmp::Reverse(self.last_seen_ms),
            self.id,
        )
    }
}

struct Filter {
    entity: Option<String>,
    rule: Option<Glob>,
    assignee: Option<String>,
}

impl Triage {
    /// Lists alerts and incidents, ranked and filtered (see [`Query`]).
    pub fn list(&self, q: &Query) -> Result<Page<'_>, TriageError> {
        let filter = Filter {
            entity: q.entity.as_ref().map(|e| normalize_entity(e)),
            rule: q
                .rule
                .as_deref()
                .map(|r| {
                    Glob::new(r).map_err(|reason| TriageError::InvalidInput {
                        field: "rule",
                        reason,
                    })
                })
                .transpose()?,
            assignee: q.assignee.as_ref().map(|a| a.trim().to_lowercase()),
        };
        let fingerprint = fingerprint(q);
        let after = q
            .page_token
            .as_deref()
            .filter(|t| !t.is_empty())
            .map(|t| decode_token(t, fingerprint))
            .transpose()?;
        let size = match q.page_size {
            0 => DEFAULT_PAGE_SIZE,
            n => n.min(MAX_PAGE_SIZE),
        } as usize;

        let mut items: Vec<CaseView<'_>> = Vec::new();
        if q.kinds != Kinds::Incidents {
            items.extend(self.st.alerts.values().map(CaseView::Alert));
        }
        if q.kinds != Kinds::Alerts {
            items.extend(self.st.incidents.values().map(CaseView::Incident));
        }
        items.retain(|c| matches(c, q, &filter));
        items.sort_by_key(|c| c.rank().key());
        let total = items.len();
        let start = match after {
            Some(after) => items.partition_point(|c| c.rank().key() <= after.key()),
            None => 0,
        };
        let page: Vec<CaseView<'_>> = items.into_iter().skip(start).take(size + 1).collect();
        let (items, next_page_token) = if page.len() > size {
            let items: Vec<CaseView<'_>> = page.into_iter().take(size).collect();
            let token = items.last().map(|c| encode_token(&c.rank(), fingerprint));
            (items, token)
        } else {
            (page, None)
        };
        Ok(Page {
            items,
            next_page_token,
            total,
        })
    }
}

fn normalize_entity(e: &str) -> String {
    let e = e.trim();
    if e.contains(':') {
        Entity::parse(e).map_or_else(|| e.to_lowercase(), |x| x.key().to_lowercase())
    } else {
        e.to_lowercase()
    }
}

fn matches(c: &CaseView<'_>, q: &Query, f: &Filter) -> bool {
    let case = c.case();
    let state_ok = match q.state {
        Some(StateFilter::Open) => case.state.is_open(),
        Some(StateFilter::Closed) => !case.state.is_open(),
        Some(StateFilter::AutoClosed) => case.auto_closed_by().is_some(),
        None => q.include_closed || case.state.is_open(),
    };
    if !state_ok || q.min_severity.is_some_and(|s| c.severity() < s) {
        return false;
    }
    if let Some(a) = &f.assignee
        && case
            .assignee
            .as_ref()
            .is_none_or(|x| x.to_lowercase() != *a)
    {
        return false;
    }
    let entity_ok = |e: &Entity| {
        let want = f.entity.as_deref().unwrap_or_default();
        e.key().to_lowercase() == want || e.value.to_lowercase() == want
    };
    match c {
        CaseView::Alert(a) => {
            f.rule.as_ref().is_none_or(|g| g.matches(&a.rule))
                && f.entity.as_ref().is_none_or(|want| {
                    a.entity.to_lowercase() == *want
                        || a.primary_entity().is_some_and(|e| entity_ok(&e))
                        || a.entities.iter().any(entity_ok)
                })
        }
        CaseView::Incident(i) => {
            f.rule
                .as_ref()
                .is_none_or(|g| i.rules.iter().any(|r| g.matches(r)))
                && f.entity.as_ref().is_none_or(|_| entity_ok(&i.entity))
        }
    }
}

/// A hash of the filters (FNV-1a over their serialized parts), so a token
/// is refused when reused with other filters.
fn fingerprint(q: &Query) -> u64 {
    let text = format!(
        "{:?}|{:?}|{}|{:?}|{:?}|{:?}|{:?}",
        q.kinds, q.state, q.include_closed, q.min_severity, q.entity, q.rule, q.assignee
    );
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in text.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

fn encode_token(r: &Rank, fingerprint: u64) -> String {
    let (kind, n) = match r.id {
        CaseId::Alert(a) => ('a', a.0),
        CaseId::Incident(i) => ('i', i.0),
    };
    let text = format!(
        "1.{fingerprint:x}.{}.{}.{kind}{n}",
        r.score.0, r.last_seen_ms
    );
    text.bytes().map(|b| format!("{b:02x}")).collect()
}

fn decode_token(token: &str, fingerprint: u64) -> Result<Rank, TriageError> {
    let bad = |why: &str| TriageError::InvalidPageToken(why.to_owned());
    if !token.len().is_multiple_of(2) || token.len() > 256 {
        return Err(bad("it was not produced by this listing"));
    }
    let bytes: Option<Vec<u8>> = (0..token.len())
        .step_by(2)
        .map(|i| {
            token
                .get(i..i + 2)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        })
        .collect();
    let text = bytes
        .and_then(|b| String::from_utf8(b).ok())
        .ok_or_else(|| bad("it was not produced by this listing"))?;
    let parts: Vec<&str> = text.split('.').collect();
    let [version, fp, score, last, id] = parts.as_slice() else {
        return Err(bad("it was not produced by this listing"));
    };
    if *version != "1" {
        return Err(bad("it was not produced by this listing"));
    }
    if u64::from_str_radix(fp, 16).ok() != Some(fingerprint) {
        return Err(bad("it belongs to a listing with other filters"));
    }
    let score = score
        .parse()
        .map(Score)
        .map_err(|_| bad("its score is damaged"))?;
    let last_seen_ms = last.parse().map_err(|_| bad("its time is damaged"))?;
    let num = |s: &str| s.parse::<u64>().map_err(|_| bad("its id is damaged"));
    let id = match id.split_at_checked(1) {
        Some(("a", n)) => CaseId::Alert(AlertId(num(n)?)),
        Some(("i", n)) => CaseId::Incident(IncidentId(num(n)?)),
        _ => return Err(bad("its id is damaged")),
    };
    Ok(Rank {
        score,
        last_seen_ms,
        id,
    })
}
