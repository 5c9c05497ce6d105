//! Reading a generated dataset back against its ground truth: ingest its
//! proposed shards into a store, remembering where each file starts, and
//! tell which planted intrusion or look-alike a finding's events belong to.
//! Shared by every test and tool that scores detections on the scenario.

use std::collections::HashMap;
use std::path::Path;

use super::{ManifestShard, ScenarioError, ScenarioManifest};
use crate::ingest::{self, Format};
use crate::shard::ShardStore;

/// Who a record belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Owner {
    /// The manifest's `intrusions[i]`.
    Intrusion(usize),
    /// The manifest's `lookalikes[i]`.
    LookAlike(usize),
}

/// Every labelled record: `(file, record index)` → owner. A record both an
/// intrusion and a look-alike list belongs to the intrusion.
pub type Owners = HashMap<(String, u64), Owner>;

impl ScenarioManifest {
    /// Who owns each labelled record.
    pub fn owners(&self) -> Owners {
        let mut map = HashMap::new();
        for (i, intrusion) in self.intrusions.iter().enumerate() {
            for refs in &intrusion.events {
                for &r in &refs.records {
                    map.insert((refs.file.clone(), r), Owner::Intrusion(i));
                }
            }
        }
        for (i, lookalike) in self.lookalikes.iter().enumerate() {
            for refs in &lookalike.events {
                for &r in &refs.records {
                    map.entry((refs.file.clone(), r))
                        .or_insert(Owner::LookAlike(i));
                }
            }
        }
        map
    }
}

/// A shard as ingested: its files in order, with the shard offset of each
/// file's first event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IngestedShard {
    /// The shard's name.
    pub name: String,
    /// `(file, offset of its first event)`, in ingest order.
    pub files: Vec<(String, u64)>,
}

impl IngestedShard {
    /// The file and record an offset of this shard points at.
    pub fn locate(&self, offset: u64) -> Option<(&str, u64)> {
        self.files
            .iter()
            .rev()
            .find(|(_, base)| *base <= offset)
            .map(|(file, base)| (file.as_str(), offset - base))
    }

    /// The owner of the events at `offsets` (a finding's): an intrusion if
    /// any event is one's, else a look-alike if any is one's.
    pub fn owner(&self, offsets: &[u64], owners: &Owners) -> Option<Owner> {
        offsets
            .iter()
            .filter_map(|&o| self.locate(o))
            .filter_map(|(file, record)| owners.get(&(file.to_owned(), record)).copied())
            .min()
    }
}

/// Ingests proposed shard `shard` of the dataset under `dir` into `store`,
/// file by file in the manifest's order. Every record must parse and every
/// file hold the events the manifest counts.
pub fn ingest_shard(
    dir: &Path,
    manifest: &ScenarioManifest,
    shard: &ManifestShard,
    store: &ShardStore,
) -> Result<IngestedShard, ScenarioError> {
    let mut files = Vec::new();
    let mut base = 0;
    for path in &shard.files {
        let failed = |reason: String| ScenarioError::Ingest {
            path: path.clone(),
            reason,
        };
        let entry = manifest
            .files
            .iter()
            .find(|f| &f.path == path)
            .ok_or_else(|| failed("the manifest does not list it".to_owned()))?;
        let format: Format = entry
            .format
            .parse()
            .map_err(|e| failed(format!("format `{}`: {e}", entry.format)))?;
        let (_, records) =
            ingest::open(&dir.join(path), Some(format)).map_err(|e| failed(e.to_string()))?;
        let report = store
            .append(&shard.name, shard.labels.clone(), records, &mut |_| {})
            .map_err(|e| failed(e.to_string()))?;
        if report.malformed > 0 || report.events_stored != entry.events {
            return Err(failed(format!(
                "stored {} events with {} malformed; the manifest counts {}",
                report.events_stored, report.malformed, entry.events
            )));
        }
        files.push((path.clone(), base));
        base += report.events_stored;
    }
    Ok(IngestedShard {
        name: shard.name.clone(),
        files,
    })
}
