//! What people do: assign, comment, give a verdict, close, reopen. Pure
//! functions of the state; each checks its input and changes nothing when it
//! returns an error.

use crate::case::{
    Actor, Case, ClosedBy, Comment, MAX_COMMENTS, MAX_TEXT, MAX_WHO, Verdict, VerdictKind,
};
use crate::effect::Effect;
use crate::error::TriageError;
use crate::ids::CaseId;
use crate::triage::Triage;

/// Checks a person's name: not empty, at most [`MAX_WHO`] bytes, no
/// control characters.
pub(crate) fn check_who(who: &str) -> Result<String, TriageError> {
    let who = who.trim();
    if who.is_empty() {
        return Err(TriageError::InvalidInput {
            field: "who",
            reason: "empty; say who is acting (a user name)".into(),
        });
    }
    if who.len() > MAX_WHO || who.chars().any(char::is_control) {
        return Err(TriageError::InvalidInput {
            field: "who",
            reason: format!("use at most {MAX_WHO} bytes of printable text"),
        });
    }
    Ok(who.to_owned())
}

fn check_text(field: &'static str, text: &str, required: bool) -> Result<String, TriageError> {
    let text = text.trim();
    if required && text.is_empty() {
        return Err(TriageError::InvalidInput {
            field,
            reason: "empty; say why, in a few words".into(),
        });
    }
    if text.len() > MAX_TEXT {
        return Err(TriageError::InvalidInput {
            field,
            reason: format!(
                "{} bytes is too long; keep it under {MAX_TEXT} bytes",
                text.len()
            ),
        });
    }
    Ok(text.to_owned())
}

impl Triage {
    fn case_mut(&mut self, id: CaseId) -> Result<&mut Case, TriageError> {
        match id {
            CaseId::Alert(a) => self
                .st
                .alerts
                .get_mut(&a)
                .map(|x| &mut x.case)
                .ok_or(TriageError::UnknownAlert(a)),
            CaseId::Incident(i) => self
                .st
                .incidents
                .get_mut(&i)
                .map(|x| &mut x.case)
                .ok_or(TriageError::UnknownIncident(i)),
        }
    }

    /// The human side of an alert or incident.
    pub fn case(&self, id: CaseId) -> Result<&Case, TriageError> {
        match id {
            CaseId::Alert(a) => self
                .st
                .alerts
                .get(&a)
                .map(|x| &x.case)
                .ok_or(TriageError::UnknownAlert(a)),
            CaseId::Incident(i) => self
                .st
                .incidents
                .get(&i)
                .map(|x| &x.case)
                .ok_or(TriageError::UnknownIncident(i)),
        }
    }

    /// Assigns the case to `assignee`, or unassigns it with `None`.
    pub fn assign(
        &mut self,
        id: CaseId,
        assignee: Option<&str>,
        who: &str,
        now_ms: i64,
    ) -> Result<(), TriageError> {
        let who = check_who(who)?;
        let assignee = assignee.map(check_who).transpose()?;
        let case = self.case_mut(id)?;
        let action = match &assignee {
            Some(a) => format!("assigned to {a}"),
            None => "unassigned".to_owned(),
        };
        case.assignee = assignee;
        case.log(now_ms, Actor::Person(who), action);
        Ok(())
    }

    /// Adds a comment.
    pub fn comment(
        &mut self,
        id: CaseId,
        text: &str,
        who: &str,
        now_ms: i64,
    ) -> Result<(), TriageError> {
        let who = check_who(who)?;
        let text = check_text("comment", text, true)?;
        if self.case(id)?.comments.len() >= MAX_COMMENTS {
            return Err(TriageError::InvalidInput {
                field: "comment",
                reason: format!(
                    "{id} already has {MAX_COMMENTS} comments, the most it keeps; summarise them in one"
                ),
            });
        }
        let case = self.case_mut(id)?;
        case.comments.push(Comment {
            who: who.clone(),
            at_ms: now_ms,
            text,
        });
        case.log(now_ms, Actor::Person(who), "commented");
        Ok(())
    }

    /// Records a verdict (replacing an earlier one). A false-positive or
    /// benign-expected verdict also closes the case if it is open. Verdicts
    /// on alerts count toward their rule's and module's statistics and may
    /// produce a suppression proposal ([`Effect::ProposalCreated`]).
    pub fn set_verdict(
        &mut self,
        id: CaseId,
        kind: VerdictKind,
        comment: &str,
        who: &str,
        now_ms: i64,
    ) -> Result<Vec<Effect>, TriageError> {
        let who = check_who(who)?;
        let comment = check_text("verdict comment", comment, false)?;
        self.case(id)?;
        let mut effects = Vec::new();
        if let CaseId::Alert(a) = id {
            let st = &mut self.st;
            if let Some(alert) = st.alerts.get(&a) {
                let old = alert.case.verdict.as_ref().map(|v| v.kind);
                if let Some(p) = st.verdicts.record(&self.config, alert, old, kind, now_ms) {
                    st.stats.proposals_created += 1;
                    effects.push(Effect::ProposalCreated { proposal: p });
                }
            }
        }
        let case = self.case_mut(id)?;
        let note = if comment.is_empty() {
            kind.name().to_owned()
        } else {
            format!("{}: {comment}", kind.name())
        };
        case.verdict = Some(Verdict {
            kind,
            comment,
            who: who.clone(),
            at_ms: now_ms,
        });
        case.log(
            now_ms,
            Actor::Person(who.clone()),
            format!("verdict {note}"),
        );
        if kind.is_noise() && case.state.is_open() {
            case.close(ClosedBy::Person(who), format!("verdict {note}"), now_ms);
        }
        Ok(effects)
    }

    /// Closes an open case.
    pub fn close(
        &mut self,
        id: CaseId,
        reason: &str,
        who: &str,
        now_ms: i64,
    ) -> Result<(), TriageError> {
        let who = check_who(who)?;
        let reason = check_text("reason", reason, true)?;
        if let Some(c) = self.case(id)?.state.closure() {
            return Err(TriageError::AlreadyClosed {
                case: id,
                how: format!("{}: {}", c.by, c.reason),
            });
        }
        // Checked first: a refused command leaves the case's row clean.
        self.case_mut(id)?
            .close(ClosedBy::Person(who), reason, now_ms);
        Ok(())
    }

    /// Reopens a closed case. Suppressions added later leave it open: a
    /// person decided it needs looking at.
    pub fn reopen(
        &mut self,
        id: CaseId,
        reason: &str,
        who: &str,
        now_ms: i64,
    ) -> Result<(), TriageError> {
        let who = check_who(who)?;
        let reason = check_text("reason", reason, true)?;
        if self.case(id)?.state.is_open() {
            return Err(TriageError::NotClosed(id));
        }
        let case = self.case_mut(id)?;
        case.state = crate::case::CaseState::Open;
        case.held_by_person = true;
        case.log(now_ms, Actor::Person(who), format!("reopened: {reason}"));
        Ok(())
    }
}
