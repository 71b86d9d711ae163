//! Property tests of the services' bad-input handling: generators of arbitrary and
//! adversarial request fields, a runner that drives a real server from proptest, and
//! the checks every property makes.
//!
//! # How a property reads
//! Every generated field knows whether it is valid, by construction: [`id`] draws
//! either from the valid alphabet or from a recipe for an invalid one (empty, too
//! long, a `/`, a space, NUL, non-ASCII …) and says which. A request generator
//! combines its fields into a [`Case`]: the request plus the names of the fields that
//! are wrong (`items[3].quantity`). The server's answer is then checked against that
//! verdict with [`check_answer`]:
//! - some field wrong → INVALID_ARGUMENT whose message begins with one of those
//!   fields (`items[3].quantity: must be at least 1, got 0`);
//! - every field right → anything but INVALID_ARGUMENT; a failure must be a refusal
//!   that names what it refuses (NOT_FOUND, FAILED_PRECONDITION, ALREADY_EXISTS …),
//!   never INTERNAL, UNKNOWN, UNAVAILABLE (everything is up) or a dropped connection
//!   (a panic in a handler shows up as one of those);
//! - every message is non-empty.
//!
//! [`Snapshot`] reads a service's whole database (and its etcd keys) so a property can
//! check that a refused request wrote nothing.
//!
//! Cases per property: 64, or `PROPTEST_CASES`. One server per property, not per case.

use std::collections::BTreeMap;
use std::future::Future;

use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use shop_proto::v1 as pb;
use tonic::Code;

use shop_common::domain::{MAX_ID_LEN, MAX_LINES, MAX_QUANTITY};

/// A generated request and the fields in it that are invalid (empty: a valid request).
#[derive(Debug, Clone)]
pub struct Case<T> {
    pub request: T,
    pub invalid: Vec<String>,
}

impl<T> Case<T> {
    pub fn is_valid(&self) -> bool {
        self.invalid.is_empty()
    }
}

/// A generated field value and whether it is valid.
#[derive(Debug, Clone)]
pub struct Field<T> {
    pub value: T,
    pub valid: bool,
}

impl<T> Field<T> {
    /// Adds `name` to `invalid` if this value is not valid; returns the value.
    pub fn note(self, name: &str, invalid: &mut Vec<String>) -> T {
        if !self.valid {
            invalid.push(name.to_owned());
        }
        self.value
    }
}

fn valid<T>(value: T) -> Field<T> {
    Field { value, valid: true }
}

fn invalid<T>(value: T) -> Field<T> {
    Field {
        value,
        valid: false,
    }
}

/// An identifier the shop accepts: 1-64 characters of `[A-Za-z0-9._-]`.
pub fn valid_id() -> impl Strategy<Value = String> {
    proptest::string::string_regex(&format!("[A-Za-z0-9._-]{{1,{MAX_ID_LEN}}}"))
        .expect("identifier regex")
}

/// Characters an identifier must not contain: separators, whitespace, control
/// characters, quotes, look-alikes and letters outside ASCII.
fn forbidden_char() -> impl Strategy<Value = char> {
    prop_oneof![
        Just('/'),
        Just(' '),
        Just('\0'),
        Just('\n'),
        Just('\t'),
        Just('"'),
        Just('\''),
        Just('*'),
        Just('\\'),
        Just('é'),
        Just('ﬁ'),
        Just('\u{202e}'), // right-to-left override
        Just('\u{200b}'), // zero-width space
        Just('🦀'),
        Just('Ａ'), // full-width A
        any::<char>().prop_filter("not allowed in an identifier", |c| {
            !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
        }),
    ]
}

/// An identifier the shop refuses: empty, too long, or with a forbidden character.
pub fn invalid_id() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(String::new()),
        (MAX_ID_LEN + 1..MAX_ID_LEN * 4).prop_map(|n| "x".repeat(n)),
        Just("a/../b".to_owned()),
        (valid_id(), forbidden_char(), valid_id(), any::<bool>()).prop_map(
            |(head, bad, tail, at_start)| {
                if at_start {
                    format!("{bad}{head}")
                } else {
                    format!("{head}{bad}{tail}")
                }
            }
        ),
    ]
}

/// An identifier field: valid three times in four.
pub fn id() -> impl Strategy<Value = Field<String>> {
    prop_oneof![
        3 => valid_id().prop_map(valid),
        1 => invalid_id().prop_map(invalid),
    ]
}

/// An identifier field that is one of `known` (so the request can get past NOT_FOUND)
/// half of the time.
pub fn id_from(known: Vec<String>) -> impl Strategy<Value = Field<String>> {
    prop_oneof![
        1 => proptest::sample::select(known).prop_map(valid),
        1 => id(),
    ]
}

/// An order id field: a UUID, or something that is not one (empty, padded, a letter
/// too many or off the hex range, arbitrary text).
pub fn order_id() -> impl Strategy<Value = Field<String>> {
    let uuid = any::<[u8; 16]>().prop_map(|b| uuid::Uuid::from_bytes(b).to_string());
    prop_oneof![
        3 => uuid.clone().prop_map(valid),
        1 => Just(invalid(String::new())),
        1 => uuid.clone().prop_map(|u| invalid(format!(" {u}"))),
        1 => uuid.clone().prop_map(|u| invalid(format!("{u}0"))),
        1 => uuid.clone().prop_map(|u| invalid(format!("g{}", &u[1..]))),
        1 => uuid.prop_map(|u| invalid(u[..35].to_owned())),
        2 => any::<String>()
            .prop_filter("not a UUID", |s| uuid::Uuid::parse_str(s).is_err())
            .prop_map(invalid),
    ]
}

/// A quantity field: 1..=1000, or zero, negative, just over, or huge.
pub fn quantity() -> impl Strategy<Value = Field<i32>> {
    prop_oneof![
        4 => (1..=MAX_QUANTITY).prop_map(valid),
        1 => prop_oneof![Just(0), Just(-1), Just(i32::MIN), i32::MIN..=0].prop_map(invalid),
        1 => prop_oneof![Just(MAX_QUANTITY + 1), Just(i32::MAX), MAX_QUANTITY + 1..=i32::MAX]
            .prop_map(invalid),
    ]
}

/// An integer in `range` (valid) or anywhere outside it (invalid).
pub fn bounded_i64(range: std::ops::RangeInclusive<i64>) -> impl Strategy<Value = Field<i64>> {
    let (lo, hi) = (*range.start(), *range.end());
    prop_oneof![
        4 => range.prop_map(valid),
        1 => prop_oneof![Just(lo - 1), Just(i64::MIN), i64::MIN..lo].prop_map(invalid),
        1 => prop_oneof![Just(hi + 1), Just(i64::MAX), hi + 1..=i64::MAX].prop_map(invalid),
    ]
}

/// An enum's wire value: one of `known` (valid), or any other number.
pub fn enum_value(known: std::ops::RangeInclusive<i32>) -> impl Strategy<Value = Field<i32>> {
    let outside = known.clone();
    prop_oneof![
        4 => known.prop_map(valid),
        1 => any::<i32>()
            .prop_filter("unknown value", move |v| !outside.contains(v))
            .prop_map(invalid),
    ]
}

/// Free text of at most `max` characters (valid) or longer (invalid), with any
/// characters at all (newlines, NUL, right-to-left marks, emoji).
pub fn text(max: usize) -> impl Strategy<Value = Field<String>> {
    prop_oneof![
        4 => proptest::collection::vec(any::<char>(), 0..=max)
            .prop_map(|c| valid(c.into_iter().collect())),
        1 => (max + 1..max * 3)
            .prop_map(|n| invalid("é".repeat(n))),
    ]
}

/// Cart lines for field `field` (`items`): see [`keyed_list`]; SKUs and quantities.
pub fn lines(
    field: &'static str,
    known: Vec<String>,
) -> impl Strategy<Value = Case<Vec<pb::LineItem>>> {
    keyed_list(field, known, quantity(), "quantity", MAX_LINES).prop_map(|case| Case {
        request: case
            .request
            .into_iter()
            .map(|(sku, quantity)| pb::LineItem { sku, quantity })
            .collect(),
        invalid: case.invalid,
    })
}

/// A list field (`items`, `prices`) of `(sku, value)` entries: usually 0 to 4, else
/// around `max` (just under to just over), SKUs often drawn from `known` so that
/// repeats and real SKUs both occur. The verdict lists each wrong entry's field
/// (`items[2].sku`, `items[2].quantity`), the entry that repeats an earlier SKU, and
/// `field` itself when the list is empty or longer than `max`.
pub fn keyed_list<V: Clone + std::fmt::Debug + 'static>(
    field: &'static str,
    known: Vec<String>,
    value: impl Strategy<Value = Field<V>> + 'static,
    value_name: &'static str,
    max: usize,
) -> impl Strategy<Value = Case<Vec<(String, V)>>> {
    let entry = (id_from(known), value).boxed();
    let few = proptest::collection::vec(entry.clone(), 0..=4);
    let many = proptest::collection::vec(entry, max.saturating_sub(2)..max + 10);
    prop_oneof![6 => few, 1 => many].prop_map(move |generated| {
        let mut invalid = Vec::new();
        let mut seen = std::collections::HashSet::new();
        let mut entries = Vec::new();
        for (i, (sku, value)) in generated.into_iter().enumerate() {
            let sku_ok = sku.valid;
            let sku = sku.note(&format!("{field}[{i}].sku"), &mut invalid);
            let value = value.note(&format!("{field}[{i}].{value_name}"), &mut invalid);
            if sku_ok && !seen.insert(sku.clone()) {
                invalid.push(format!("{field}[{i}].sku"));
            }
            entries.push((sku, value));
        }
        if entries.is_empty() || entries.len() > max {
            invalid.push(field.to_owned());
        }
        Case {
            request: entries,
            invalid,
        }
    })
}

/// Requests with one field (`field`, drawn from `values`) built by `build`.
pub fn single_field<T: Clone + std::fmt::Debug>(
    field: &'static str,
    values: impl Strategy<Value = Field<String>>,
    build: impl Fn(String) -> T,
) -> impl Strategy<Value = Case<T>> {
    values.prop_map(move |f| {
        let mut invalid = Vec::new();
        let value = f.note(field, &mut invalid);
        Case {
            request: build(value),
            invalid,
        }
    })
}

/// Checks every request `strategy` generates against the case's verdict: `call` sends
/// it, `snapshot` reads what the service has stored, before and after; a refused
/// request (any error) must leave the snapshot unchanged. See the module docs.
#[track_caller]
pub fn check_requests<T, R, S, C, CF, SF, SFut>(name: &str, strategy: S, snapshot: SF, call: C)
where
    T: Clone + std::fmt::Debug,
    S: Strategy<Value = Case<T>>,
    C: Fn(T) -> CF,
    CF: Future<Output = Result<R, tonic::Status>>,
    SF: Fn() -> SFut,
    SFut: Future<Output = Snapshot>,
{
    run_property(name, strategy, |case| {
        let (snapshot, call) = (&snapshot, &call);
        async move {
            let before = snapshot().await;
            let answer = call(case.request.clone()).await;
            check_answer(&case, &answer)?;
            if let Err(status) = &answer {
                let after = snapshot().await;
                prop_assert!(
                    after == before,
                    "refused with {:?} ({}) but the stored state changed",
                    status.code(),
                    status.message()
                );
            }
            Ok(())
        }
    });
}

/// Runs `property` on `cases` (64, or `PROPTEST_CASES`) values of `strategy`, with
/// shrinking, inside a multi-threaded tokio test (`#[tokio::test(flavor =
/// "multi_thread")]`): the property's future runs on the test's runtime, so it can
/// talk to the servers the test started. Panics with the smallest failing input.
#[track_caller]
pub fn run_property<S, F, Fut>(name: &str, strategy: S, property: F)
where
    S: Strategy,
    S::Value: Clone + std::fmt::Debug,
    F: Fn(S::Value) -> Fut,
    Fut: Future<Output = Result<(), TestCaseError>>,
{
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(64);
    let mut runner = TestRunner::new(Config {
        cases,
        failure_persistence: None,
        max_shrink_iters: 256,
        ..Config::default()
    });
    let runtime = tokio::runtime::Handle::current();
    let result = tokio::task::block_in_place(|| {
        runner.run(&strategy, |value| runtime.block_on(property(value)))
    });
    if let Err(e) = result {
        panic!("property {name} failed: {e}");
    }
}

/// Codes a request with valid fields may be refused with: each names something the
/// caller can act on.
const REFUSALS: [Code; 5] = [
    Code::NotFound,
    Code::FailedPrecondition,
    Code::AlreadyExists,
    Code::OutOfRange,
    Code::ResourceExhausted,
];

/// Checks a call's answer against the case's verdict (see the module docs).
pub fn check_answer<T, R>(
    case: &Case<T>,
    answer: &Result<R, tonic::Status>,
) -> Result<(), TestCaseError> {
    match answer {
        Ok(_) => {
            prop_assert!(
                case.is_valid(),
                "accepted a request with invalid {:?}",
                case.invalid
            );
        }
        Err(status) => {
            prop_assert!(
                !status.message().trim().is_empty(),
                "{:?} without a message",
                status.code()
            );
            if case.is_valid() {
                prop_assert!(
                    REFUSALS.contains(&status.code()),
                    "a valid request got {:?}: {}",
                    status.code(),
                    status.message()
                );
            } else {
                prop_assert_eq!(
                    status.code(),
                    Code::InvalidArgument,
                    "invalid {:?} got: {}",
                    &case.invalid,
                    status.message()
                );
                let names_one = case
                    .invalid
                    .iter()
                    .any(|field| status.message().starts_with(&format!("{field}:")));
                prop_assert!(
                    names_one,
                    "message {:?} names none of the invalid fields {:?}",
                    status.message(),
                    case.invalid
                );
            }
        }
    }
    Ok(())
}

/// Everything a service has stored: each table's rows (as text, sorted) and, when
/// given, the etcd keys under the service's prefix, except the leader elections'
/// (their values are progress reports that change by themselves).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    tables: BTreeMap<String, (i64, String)>,
    etcd: Vec<(String, Vec<u8>)>,
}

impl Snapshot {
    /// Reads the databases of `pools` and, with `etcd`, the keys under the prefix.
    pub async fn take<'a>(
        pools: impl IntoIterator<Item = &'a sqlx::PgPool>,
        etcd: Option<(&coord::etcd_client::Client, &str)>,
    ) -> Snapshot {
        let mut tables = BTreeMap::new();
        for (database, pool) in pools.into_iter().enumerate() {
            read_tables(database, pool, &mut tables).await;
        }
        let mut keys = Vec::new();
        if let Some((client, prefix)) = etcd {
            let found = client
                .clone()
                .get(
                    format!("{prefix}/"),
                    Some(coord::etcd_client::GetOptions::new().with_prefix()),
                )
                .await
                .expect("read etcd");
            for kv in found.kvs() {
                let key = String::from_utf8_lossy(kv.key()).into_owned();
                if !key.contains("/elections/") {
                    keys.push((key, kv.value().to_vec()));
                }
            }
        }
        Snapshot { tables, etcd: keys }
    }
}

/// Each table of the database behind `pool`: its row count and a digest of its rows.
async fn read_tables(
    database: usize,
    pool: &sqlx::PgPool,
    tables: &mut BTreeMap<String, (i64, String)>,
) {
    let names: Vec<String> = sqlx::query_scalar(
        "SELECT table_name::text FROM information_schema.tables
         WHERE table_schema = 'public' AND table_type = 'BASE TABLE'
           AND table_name <> '_sqlx_migrations' ORDER BY 1",
    )
    .fetch_all(pool)
    .await
    .expect("list tables");
    for name in names {
        let row: (i64, Option<String>) = sqlx::query_as(&format!(
            "SELECT count(*), md5(string_agg(t::text, '|' ORDER BY t::text)) FROM {} t",
            shop_common::db::quote_ident(&name)
        ))
        .fetch_one(pool)
        .await
        .expect("read a table");
        tables.insert(
            format!("{database}.{name}"),
            (row.0, row.1.unwrap_or_default()),
        );
    }
}
