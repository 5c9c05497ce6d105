//! Follow-up rules: when an alert opens in a scope, ask the coordinator to
//! start a pivot hunt on the alert's entity around the alert's time, so the
//! context is gathered before a person opens the alert. Triage only emits
//! the request ([`crate::Effect::StartFollowUp`]), once per alert and rule.

use serde::{Deserialize, Serialize};

use crate::finding::{Entity, EntityKind};
use crate::ids::FollowUpId;
use crate::scope::Scope;
use crate::score::Score;

/// A follow-up rule.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FollowUp {
    /// Its name.
    pub id: FollowUpId,
    /// Which alerts it starts for.
    pub when: Scope,
    /// Only alerts scoring at least this.
    pub min_score: Option<Score>,
    /// Which of the alert's entities to pivot on.
    pub pivot: Pivot,
    /// How far before the alert's first and after its last finding to look.
    pub around_ms: i64,
}

/// Which entities a follow-up pivots on.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Pivot {
    /// The alert's own entity (what the module named), when it is a host,
    /// user or IP; else the first host, user or IP of its evidence.
    #[default]
    Primary,
    /// Every host of the alert.
    Host,
    /// Every user.
    User,
    /// Every IP.
    Ip,
    /// Every host, user and IP.
    All,
}

/// The entities `pivot` selects from an alert's entity and entities.
pub fn pivot_entities(pivot: Pivot, primary: Option<&Entity>, entities: &[Entity]) -> Vec<Entity> {
    let of = |kind: EntityKind| -> Vec<Entity> {
        entities
            .iter()
            .filter(|e| e.kind == kind)
            .cloned()
            .collect()
    };
    match pivot {
        Pivot::Primary => primary
            .filter(|e| e.kind.carries_risk())
            .or_else(|| entities.iter().find(|e| e.kind.carries_risk()))
            .cloned()
            .into_iter()
            .collect(),
        Pivot::Host => of(EntityKind::Host),
        Pivot::User => of(EntityKind::User),
        Pivot::Ip => of(EntityKind::Ip),
        Pivot::All => entities
            .iter()
            .filter(|e| e.kind.carries_risk())
            .cloned()
            .collect(),
    }
}
