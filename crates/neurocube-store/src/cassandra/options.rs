//! Settings of the Cassandra backend, the `cassandra://` URI, and the
//! mapping of driver errors to [`StoreError`].

use std::time::Duration;

use scylla::errors::{
    DbError, ExecutionError, NewSessionError, PrepareError, RequestAttemptError,
    SchemaAgreementError,
};
use scylla::statement::{Consistency, SerialConsistency};

use crate::StoreError;

pub(super) const BACKEND: &str = "cassandra";

/// Settings of the Cassandra/ScyllaDB store.
#[derive(Clone, Debug)]
pub struct CassandraOptions {
    /// Contact points, `host` or `host:port` (port 9042 if absent).
    pub nodes: Vec<String>,
    /// Keyspace holding the tables (created if missing).
    pub keyspace: String,
    /// The keyspace's replication map in CQL, e.g.
    /// `{'class': 'SimpleStrategy', 'replication_factor': 1}`.
    pub replication: String,
    /// Consistency of reads and scans.
    pub read_consistency: Consistency,
    /// Consistency of writes and deletes (also the commit consistency of CAS).
    pub write_consistency: Consistency,
    /// Paxos consistency of compare-and-set (`SERIAL` or `LOCAL_SERIAL`).
    pub serial_consistency: SerialConsistency,
    /// Requests in flight at once, over all callers.
    pub max_concurrency: usize,
    /// Timeout of one connection attempt.
    pub connect_timeout: Duration,
    /// Client-side timeout of one request (so nothing hangs when a node dies).
    pub request_timeout: Duration,
    /// How long `open` retries while no node answers before it gives up.
    pub startup_deadline: Duration,
}

impl CassandraOptions {
    /// Defaults for `nodes` and `keyspace`: replication factor 1,
    /// `LOCAL_QUORUM` reads and writes, `LOCAL_SERIAL` CAS.
    pub fn new(nodes: Vec<String>, keyspace: impl Into<String>) -> Self {
        Self {
            nodes,
            keyspace: keyspace.into(),
            replication: "{'class': 'SimpleStrategy', 'replication_factor': 1}".into(),
            read_consistency: Consistency::LocalQuorum,
            write_consistency: Consistency::LocalQuorum,
            serial_consistency: SerialConsistency::LocalSerial,
            max_concurrency: 256,
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(10),
            startup_deadline: Duration::from_secs(60),
        }
    }

    /// Parse `cassandra://host1,host2:9043/keyspace` (other settings default).
    pub fn from_uri(uri: &str) -> Result<Self, String> {
        let bad = || format!("store uri '{uri}' must look like cassandra://host1,host2/keyspace");
        let rest = uri.strip_prefix("cassandra://").ok_or_else(bad)?;
        let (hosts, keyspace) = rest.split_once('/').ok_or_else(bad)?;
        let keyspace = keyspace.trim_end_matches('/');
        let nodes: Vec<String> = hosts
            .split(',')
            .map(str::trim)
            .filter(|h| !h.is_empty())
            .map(|h| {
                if h.contains(':') {
                    h.to_string()
                } else {
                    format!("{h}:9042")
                }
            })
            .collect();
        if nodes.is_empty() {
            return Err(bad());
        }
        validate_keyspace(keyspace)?;
        Ok(Self::new(nodes, keyspace.to_ascii_lowercase()))
    }

    pub(super) fn hosts(&self) -> String {
        self.nodes.join(",")
    }
}

/// Keyspace names are CQL identifiers: 1–48 letters, digits and `_`.
pub fn validate_keyspace(ks: &str) -> Result<(), String> {
    let ok = !ks.is_empty()
        && ks.len() <= 48
        && ks.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
        && ks.as_bytes()[0].is_ascii_alphabetic();
    if ok {
        Ok(())
    } else {
        Err(format!(
            "keyspace '{ks}' must be 1-48 letters, digits or '_', starting with a letter"
        ))
    }
}

/// `ONE`, `QUORUM`, `LOCAL_QUORUM`, `ALL`, … (case-insensitive).
pub fn parse_consistency(s: &str) -> Result<Consistency, String> {
    Ok(match s.to_ascii_uppercase().as_str() {
        "ANY" => Consistency::Any,
        "ONE" => Consistency::One,
        "TWO" => Consistency::Two,
        "THREE" => Consistency::Three,
        "QUORUM" => Consistency::Quorum,
        "ALL" => Consistency::All,
        "LOCAL_QUORUM" => Consistency::LocalQuorum,
        "EACH_QUORUM" => Consistency::EachQuorum,
        "LOCAL_ONE" => Consistency::LocalOne,
        _ => {
            return Err(format!(
                "consistency '{s}' must be one of ONE, TWO, THREE, QUORUM, ALL, LOCAL_QUORUM, EACH_QUORUM, LOCAL_ONE, ANY"
            ));
        }
    })
}

/// `SERIAL` or `LOCAL_SERIAL` (case-insensitive).
pub fn parse_serial_consistency(s: &str) -> Result<SerialConsistency, String> {
    match s.to_ascii_uppercase().as_str() {
        "SERIAL" => Ok(SerialConsistency::Serial),
        "LOCAL_SERIAL" => Ok(SerialConsistency::LocalSerial),
        _ => Err(format!(
            "serial consistency '{s}' must be SERIAL or LOCAL_SERIAL"
        )),
    }
}

/// A short, user-facing reason for a transient failure, or `None` if the
/// error is not transient (a bug or a schema problem).
fn transient_attempt(e: &RequestAttemptError) -> Option<String> {
    match e {
        RequestAttemptError::BrokenConnectionError(_) => Some("connection lost".into()),
        RequestAttemptError::UnableToAllocStreamId => Some("too many requests in flight".into()),
        RequestAttemptError::DbError(db, _) => match db {
            DbError::Unavailable { .. } => Some("not enough replicas alive".into()),
            DbError::Overloaded | DbError::RateLimitReached { .. } => Some("overloaded".into()),
            DbError::IsBootstrapping => Some("node is starting".into()),
            DbError::ReadTimeout { .. } => Some("read timed out".into()),
            DbError::WriteTimeout { .. } => Some("write timed out".into()),
            DbError::ReadFailure { .. } | DbError::WriteFailure { .. } => {
                Some("replica failure".into())
            }
            _ => None,
        },
        _ => None,
    }
}

/// Whether a request certainly did not run (a coordinator refused it before
/// executing: shutting down, starting, too few replicas, or no connection),
/// so running it again through another coordinator is safe even for a
/// compare-and-set. The driver retries idempotent statements by itself;
/// this covers the rest while a node of a cluster goes down.
pub(super) fn not_executed(e: &ExecutionError) -> bool {
    match e {
        ExecutionError::ConnectionPoolError(_) | ExecutionError::EmptyPlan => true,
        ExecutionError::LastAttemptError(a) => matches!(
            a,
            RequestAttemptError::UnableToAllocStreamId
                | RequestAttemptError::DbError(
                    DbError::Overloaded | DbError::IsBootstrapping | DbError::Unavailable { .. },
                    _
                )
        ),
        _ => false,
    }
}

/// Boil a connection error's text down to a few words.
fn connection_reason(text: &str) -> String {
    let t = text.to_ascii_lowercase();
    if t.contains("refused") {
        "connection refused".into()
    } else if t.contains("timeout") || t.contains("timed out") {
        "connect timed out".into()
    } else if t.contains("initializ") {
        "connecting".into()
    } else if t.contains("reset") || t.contains("broken") || t.contains("closed") {
        "connection lost".into()
    } else {
        "no connection".into()
    }
}

fn execution_reason(e: &ExecutionError) -> Option<String> {
    match e {
        ExecutionError::ConnectionPoolError(p) => Some(connection_reason(&p.to_string())),
        ExecutionError::PrepareError(p) => prepare_reason(p),
        ExecutionError::EmptyPlan => Some("no node available".into()),
        ExecutionError::RequestTimeout(d) => Some(format!("no answer within {} ms", d.as_millis())),
        ExecutionError::LastAttemptError(a) => transient_attempt(a),
        ExecutionError::SchemaAgreementError(s) => schema_reason(s),
        ExecutionError::MetadataError(m) => Some(connection_reason(&m.to_string())),
        _ => None,
    }
}

fn prepare_reason(e: &PrepareError) -> Option<String> {
    match e {
        PrepareError::ConnectionPoolError(p) => Some(connection_reason(&p.to_string())),
        PrepareError::AllAttemptsFailed { first_attempt } => transient_attempt(first_attempt),
        _ => None,
    }
}

fn schema_reason(e: &SchemaAgreementError) -> Option<String> {
    match e {
        SchemaAgreementError::Timeout(_) => Some("schema agreement timed out".into()),
        SchemaAgreementError::RequestError(a) => transient_attempt(a),
        other => Some(connection_reason(&other.to_string())),
    }
}

/// Map a driver error: transient failures become
/// [`StoreError::Unavailable`] with a short reason (never the driver's
/// debug output); anything else is an engine failure.
pub(super) fn exec_error(hosts: &str, op: &'static str, e: ExecutionError) -> StoreError {
    match execution_reason(&e) {
        Some(why) => unavailable(hosts, &why),
        None => engine(op, e),
    }
}

pub(super) fn prep_error(hosts: &str, op: &'static str, e: PrepareError) -> StoreError {
    match prepare_reason(&e) {
        Some(why) => unavailable(hosts, &why),
        None => engine(op, e),
    }
}

/// Errors of `Session::connect`: configuration mistakes are engine errors,
/// everything else means no node could be reached.
pub(super) fn session_error(hosts: &str, e: NewSessionError) -> StoreError {
    match &e {
        NewSessionError::EmptyKnownNodesList | NewSessionError::IllegalConfig(_) => {
            engine("connect", e)
        }
        NewSessionError::FailedToResolveAnyHostname(_) => unavailable(hosts, "cannot resolve"),
        other => unavailable(hosts, &connection_reason(&other.to_string())),
    }
}

pub(super) fn unavailable(hosts: &str, why: &str) -> StoreError {
    StoreError::Unavailable {
        backend: BACKEND,
        reason: format!("cannot reach {hosts} ({why}); retry later"),
    }
}

pub(super) fn engine(
    op: &'static str,
    e: impl std::error::Error + Send + Sync + 'static,
) -> StoreError {
    StoreError::Engine {
        backend: BACKEND,
        op,
        source: Box::new(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uri_parsing() {
        let o = CassandraOptions::from_uri("cassandra://a,b:9043/My_ks").unwrap();
        assert_eq!(o.nodes, vec!["a:9042".to_string(), "b:9043".to_string()]);
        assert_eq!(o.keyspace, "my_ks");
        assert!(CassandraOptions::from_uri("cassandra:///ks").is_err());
        assert!(CassandraOptions::from_uri("cassandra://h").is_err());
        let e = CassandraOptions::from_uri("cassandra://h/bad-name").unwrap_err();
        assert!(e.contains("keyspace 'bad-name'"), "{e}");
    }

    #[test]
    fn consistency_parsing() {
        assert_eq!(
            parse_consistency("local_quorum").unwrap(),
            Consistency::LocalQuorum
        );
        assert_eq!(parse_consistency("ONE").unwrap(), Consistency::One);
        assert!(parse_consistency("SERIAL").is_err());
        assert_eq!(
            parse_serial_consistency("serial").unwrap(),
            SerialConsistency::Serial
        );
    }

    #[test]
    fn unavailable_message_is_short() {
        let e = unavailable(
            "127.0.0.1:9042",
            &connection_reason("Connection refused (os error 111)"),
        );
        assert_eq!(
            e.to_string(),
            "cassandra store unavailable: cannot reach 127.0.0.1:9042 (connection refused); retry later"
        );
    }
}
