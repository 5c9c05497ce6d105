//! Hunt module `lateral-movement`: remote service creation, admin-share
//! access and new remote logons between hosts, correlated per source and
//! destination (ATT&CK T1021, T1021.001, T1021.002, T1569.002, T1570).
//!
//! Reads Windows Security 4624 (logon), 5140/5145 (share access), 4697 and
//! System 7045 (service installed). Prefilter: `EventID` is one of those.
//! Findings come at the end of the task. See [`detector`] for the logic.

#![warn(missing_docs)]

pub mod detector;

use detector::{
    Activity, Config, Detector, Observation, TECHNIQUES, is_admin_share, share_name,
    suspicious_service,
};
use quarry_sdk::time::MINUTE_MS;
use quarry_sdk::{Descriptor, Emitter, Event, Field, Hunt, Output, Params, Predicate};

/// The module's name in the registry.
pub const NAME: &str = "lateral-movement";
/// The module's version (the crate version).
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Parameter: minutes after a remote access a service install is attributed to it.
pub const PARAM_WINDOW_MINUTES: &str = "correlation_window_minutes";
/// Parameter: destinations of new remote logons from one source for a fan-out finding.
pub const PARAM_FANOUT: &str = "fanout_threshold";
/// Parameter: comma-separated source addresses never reported.
pub const PARAM_IGNORE_SOURCES: &str = "ignore_sources";

quarry_sdk::fields! {
    /// The event fields this module reads.
    pub mod field {
        /// 4624, 5140, 5145, 4697 or 7045.
        EVENT_ID = "EventID",
        /// The canonical host of the event.
        HOST = "host",
        /// The machine that logged the event, as evtx names it.
        COMPUTER = "Computer",
        /// The remote address (4624, 5140, 5145).
        IP_ADDRESS = "IpAddress",
        /// 4624: the account that logged on.
        TARGET_USER_NAME = "TargetUserName",
        /// 4624: its domain.
        TARGET_DOMAIN_NAME = "TargetDomainName",
        /// 5140/5145/4697: the account.
        SUBJECT_USER_NAME = "SubjectUserName",
        /// 5140/5145/4697: its domain.
        SUBJECT_DOMAIN_NAME = "SubjectDomainName",
        /// 4624: the logon type.
        LOGON_TYPE = "LogonType",
        /// 5140/5145: `\\*\ADMIN$`.
        SHARE_NAME = "ShareName",
        /// 5145: the file or pipe in the share.
        RELATIVE_TARGET_NAME = "RelativeTargetName",
        /// 7045/4697: the service name.
        SERVICE_NAME = "ServiceName",
        /// 7045: the service binary.
        IMAGE_PATH = "ImagePath",
        /// 4697: the service binary.
        SERVICE_FILE_NAME = "ServiceFileName",
    }
}

/// The module: a [`Detector`] per task.
#[derive(Debug)]
pub struct LateralMovement {
    detector: Detector,
}

impl LateralMovement {
    /// The detection configuration for the hunt's parameters.
    pub fn config(params: &Params) -> Result<Config, String> {
        params.ensure_known(&[PARAM_WINDOW_MINUTES, PARAM_FANOUT, PARAM_IGNORE_SOURCES])?;
        let d = Config::default();
        Ok(Config {
            correlation_window_ms: params.u64_in_range_or(
                PARAM_WINDOW_MINUTES,
                (d.correlation_window_ms / MINUTE_MS) as u64,
                1..=1_440,
            )? as i64
                * MINUTE_MS,
            fanout_threshold: params.u64_in_range_or(
                PARAM_FANOUT,
                d.fanout_threshold as u64,
                2..=100_000,
            )? as usize,
            ignore_sources: params
                .list(PARAM_IGNORE_SOURCES)
                .into_iter()
                .map(str::to_owned)
                .collect(),
        })
    }
}

fn meaningful(event: &Event, field: Field) -> Option<&str> {
    event.get_nonempty(field).filter(|&v| v != "-")
}

fn account(event: &Event, user: Field, domain: Field) -> Option<String> {
    let user = meaningful(event, user)?;
    Some(match meaningful(event, domain) {
        Some(domain) => format!("{}\\{}", domain.to_ascii_uppercase(), user),
        None => user.to_owned(),
    })
}

/// Reads the observation an event describes; `None` for other events and
/// for ones that say nothing about lateral movement (local logons, machine
/// accounts, ordinary shares, ordinary services).
pub fn observation(event: &Event) -> Option<Observation> {
    let destination = meaningful(event, field::HOST)
        .or_else(|| meaningful(event, field::COMPUTER))?
        .to_ascii_lowercase();
    let source = meaningful(event, field::IP_ADDRESS).map(str::to_owned);
    let activity = match event.get_u64(field::EVENT_ID)? {
        4624 => {
            let logon_type = event.get_u64(field::LOGON_TYPE)?;
            if logon_type != 3 && logon_type != 10 {
                return None;
            }
            let user = meaningful(event, field::TARGET_USER_NAME)?;
            if user.ends_with('$') || user.eq_ignore_ascii_case("ANONYMOUS LOGON") {
                return None;
            }
            Activity::Logon {
                user: account(event, field::TARGET_USER_NAME, field::TARGET_DOMAIN_NAME)?,
                logon_type: logon_type as u32,
            }
        }
        5140 | 5145 => {
            let share = share_name(meaningful(event, field::SHARE_NAME)?);
            let target = meaningful(event, field::RELATIVE_TARGET_NAME);
            if !is_admin_share(&share, target) {
                return None;
            }
            let user = meaningful(event, field::SUBJECT_USER_NAME)?;
            if user.ends_with('$') {
                return None;
            }
            Activity::Share {
                share,
                target: target.map(str::to_owned),
                user: account(event, field::SUBJECT_USER_NAME, field::SUBJECT_DOMAIN_NAME)?,
            }
        }
        4697 | 7045 => {
            let name = meaningful(event, field::SERVICE_NAME)?;
            let image = meaningful(event, field::IMAGE_PATH)
                .or_else(|| meaningful(event, field::SERVICE_FILE_NAME))?;
            Activity::Service {
                name: name.to_owned(),
                image: image.to_owned(),
                reason: suspicious_service(name, image)?,
            }
        }
        _ => return None,
    };
    Some(Observation {
        timestamp_ms: event.timestamp_ms,
        offset: event.offset,
        destination,
        source,
        activity,
    })
}

impl Hunt for LateralMovement {
    fn describe() -> Descriptor {
        Descriptor::new(NAME, VERSION)
            .with_description(
                "Lateral movement between hosts: remote service creation (7045/4697), admin-share access (5140/5145) and new remote logons (4624 types 3/10), correlated per source and destination.",
            )
            .with_fields(field::NAMES)
            .with_predicate(Predicate::equals(
                "EventID",
                &["4624", "5140", "5145", "4697", "7045"],
            ))
            .with_techniques(&TECHNIQUES)
    }

    fn new(params: &Params) -> Result<Self, String> {
        Ok(LateralMovement {
            detector: Detector::new(Self::config(params)?),
        })
    }

    fn scan(&mut self, batch: &[Event], _out: &mut Emitter) -> Result<(), String> {
        for event in batch {
            if let Some(o) = observation(event) {
                self.detector.observe(&o);
            }
        }
        Ok(())
    }

    fn finish(self, out: &mut Output) {
        if self.detector.dropped() > 0 {
            quarry_sdk::log::warn(&format!(
                "{} observations beyond the first {} source/destination pairs were not analysed",
                self.detector.dropped(),
                detector::MAX_PAIRS
            ));
        }
        for finding in self.detector.finish() {
            out.emit(finding);
        }
    }
}

quarry_sdk::export_hunt!(LateralMovement);

#[cfg(test)]
mod tests {
    use super::*;
    use quarry_sdk::Task;

    fn event(values: &[(Field, &str)]) -> Event {
        Event::with_values(1_700_000_000_000, 1, field::NAMES, values)
    }

    #[test]
    fn descriptor_and_parameters() {
        let d = Task::<LateralMovement>::describe();
        assert_eq!(d.name, NAME);
        assert_eq!(
            d.prefilter[0].values,
            ["4624", "5140", "5145", "4697", "7045"]
        );
        assert_eq!(
            LateralMovement::config(&Params::default()),
            Ok(Config::default())
        );
        let p = Params::from_pairs([("fanout_threshold", "1")]).unwrap();
        assert!(
            LateralMovement::config(&p)
                .unwrap_err()
                .contains("from 2 to")
        );
    }

    #[test]
    fn reads_the_windows_events() {
        let logon = event(&[
            (field::EVENT_ID, "4624"),
            (field::COMPUTER, "SRV01"),
            (field::IP_ADDRESS, "10.0.0.5"),
            (field::TARGET_USER_NAME, "admin"),
            (field::TARGET_DOMAIN_NAME, "corp"),
            (field::LOGON_TYPE, "3"),
        ]);
        let o = observation(&logon).unwrap();
        assert_eq!(o.destination, "srv01");
        assert_eq!(
            o.activity,
            Activity::Logon {
                user: "CORP\\admin".to_owned(),
                logon_type: 3
            }
        );
        let machine = event(&[
            (field::EVENT_ID, "4624"),
            (field::COMPUTER, "SRV01"),
            (field::IP_ADDRESS, "10.0.0.5"),
            (field::TARGET_USER_NAME, "WS01$"),
            (field::LOGON_TYPE, "3"),
        ]);
        assert_eq!(observation(&machine), None);
        let interactive = event(&[
            (field::EVENT_ID, "4624"),
            (field::COMPUTER, "SRV01"),
            (field::TARGET_USER_NAME, "admin"),
            (field::LOGON_TYPE, "2"),
        ]);
        assert_eq!(observation(&interactive), None);
        let share = event(&[
            (field::EVENT_ID, "5145"),
            (field::COMPUTER, "SRV01"),
            (field::IP_ADDRESS, "10.0.0.5"),
            (field::SUBJECT_USER_NAME, "admin"),
            (field::SHARE_NAME, "\\\\*\\ADMIN$"),
            (field::RELATIVE_TARGET_NAME, "x.exe"),
        ]);
        assert!(matches!(
            observation(&share).unwrap().activity,
            Activity::Share { .. }
        ));
        let sysvol = event(&[
            (field::EVENT_ID, "5140"),
            (field::COMPUTER, "DC01"),
            (field::IP_ADDRESS, "10.0.0.5"),
            (field::SUBJECT_USER_NAME, "admin"),
            (field::SHARE_NAME, "\\\\*\\SYSVOL"),
        ]);
        assert_eq!(observation(&sysvol), None);
        let service = event(&[
            (field::EVENT_ID, "4697"),
            (field::COMPUTER, "SRV01"),
            (field::SERVICE_NAME, "PSEXESVC"),
            (field::SERVICE_FILE_NAME, "%SystemRoot%\\PSEXESVC.exe"),
        ]);
        assert!(matches!(
            observation(&service).unwrap().activity,
            Activity::Service { .. }
        ));
        let ordinary = event(&[
            (field::EVENT_ID, "7045"),
            (field::COMPUTER, "SRV01"),
            (field::SERVICE_NAME, "Agent"),
            (field::IMAGE_PATH, "C:\\Program Files\\Agent\\agent.exe"),
        ]);
        assert_eq!(observation(&ordinary), None);
    }
}
