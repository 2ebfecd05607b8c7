//! A faithful fake of the Airtable Web API (see the protocol notes, §4) for tests.
//!
//! [`FakeAirtable::start`] serves one base with one table on `127.0.0.1:<random port>`,
//! spawned on the current tokio runtime and stopped when the fake is dropped.
//!
//! What it enforces, as Airtable does:
//! - `Authorization: Bearer <pat>` on every request, else 401 `AUTHENTICATION_REQUIRED`.
//! - A per-base token bucket of `requests_per_second` (5): a request that finds it empty
//!   gets 429 `TOO_MANY_REQUESTS`, and so does every request to the base during the
//!   following `penalty` (30 s; shorter in tests). The penalty is not extended by requests
//!   made during it.
//! - Listing: `pageSize` (1–100, else 422), opaque `offset` tokens (absent on the last page;
//!   unknown or expired → 422 `LIST_RECORDS_ITERATOR_NOT_AVAILABLE`), `maxRecords`, `view`
//!   (configured names only, else 422 `VIEW_NAME_NOT_FOUND`), `fields[]`, and
//!   `filterByFormula` in the subset described in the `formula` module (anything else →
//!   422 `INVALID_FILTER_BY_FORMULA`). Empty values are omitted from `fields`.
//! - Writes: PATCH merges fields, PUT replaces them, POST creates; 1 to 10 records per
//!   request (else 422 `INVALID_RECORDS`); every batch is validated before anything is
//!   applied; unknown field names → 422 `UNKNOWN_FIELD_NAME`; unknown record ids → 422
//!   `ROW_DOES_NOT_EXIST` (404 `NOT_FOUND` in the single-record form); `typecast` accepted.
//! - Unknown routes and bases → 404 with the bare-string body `{"error":"NOT_FOUND"}`;
//!   an unknown table → 404 with the object body.
//!
//! Not supported (answered with 422 naming the fake): `sort`, `cellFormat`,
//! `returnFieldsByFieldId`, `performUpsert`, DELETE, the `listRecords` POST form, field
//! types and select options (every value is stored as sent), the 50 requests/second
//! per-token limit.
//!
//! For tests: [`FakeAirtable::fail_next`] scripts failures, [`FakeAirtable::expire_iterators`]
//! expires list iterators, and [`FakeAirtable::records`] / [`FakeAirtable::requests`]
//! show the table and every request received.

mod formula;

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Router;
use serde_json::{json, Map, Value};
use tokio::task::JoinHandle;

use formula::Formula;

/// Airtable's cap on records per write request.
const MAX_RECORDS_PER_WRITE: usize = 10;
/// Airtable's cap on `pageSize`.
const MAX_PAGE_SIZE: usize = 100;

/// A record in the fake table.
#[derive(Debug, Clone, PartialEq)]
pub struct FakeRecord {
    /// The record id (`rec...`).
    pub id: String,
    /// The creation time in Airtable's format.
    pub created_time: String,
    /// The field values; empty values are dropped when stored.
    pub fields: Map<String, Value>,
}

impl FakeRecord {
    /// A record with the given id and fields (a JSON object; anything else means no fields).
    pub fn new(id: impl Into<String>, fields: Value) -> Self {
        let fields = match fields {
            Value::Object(map) => map,
            _ => Map::new(),
        };
        Self {
            id: id.into(),
            created_time: "2024-01-01T00:00:00.000Z".into(),
            fields,
        }
    }

    fn to_json(&self, only: Option<&[String]>) -> Value {
        let fields: Map<String, Value> = self
            .fields
            .iter()
            .filter(|(name, value)| {
                !is_empty_value(value) && only.is_none_or(|o| o.iter().any(|n| n == *name))
            })
            .map(|(name, value)| (name.clone(), value.clone()))
            .collect();
        json!({"id": self.id, "createdTime": self.created_time, "fields": fields})
    }
}

/// A view of the fake table: a name, and optionally a formula that filters it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FakeView {
    /// The view's name (or id), as given in `view=`.
    pub name: String,
    /// A filter in the fake's formula subset; `None` shows every record.
    pub formula: Option<String>,
}

impl FakeView {
    /// A view showing every record.
    pub fn all(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            formula: None,
        }
    }
}

/// How to set up a fake.
#[derive(Debug, Clone)]
pub struct FakeAirtableSetup {
    /// The one base served (`app...`).
    pub base_id: String,
    /// The table's name.
    pub table_name: String,
    /// The table's id (`tbl...`), accepted in place of the name.
    pub table_id: String,
    /// The personal access token every request must carry.
    pub pat: String,
    /// The records, in creation order (which is the listing order).
    pub records: Vec<FakeRecord>,
    /// Field names the table has besides those used by the seeded records.
    pub extra_fields: Vec<String>,
    /// The views that may be named in `view=`.
    pub views: Vec<FakeView>,
    /// The size and refill rate of the per-base token bucket.
    pub requests_per_second: u32,
    /// How long every request is refused with 429 after the bucket ran dry.
    pub penalty: Duration,
}

impl FakeAirtableSetup {
    /// An empty table with Airtable's limits and a `Grid view`.
    pub fn new(
        base_id: impl Into<String>,
        table_name: impl Into<String>,
        pat: impl Into<String>,
    ) -> Self {
        Self {
            base_id: base_id.into(),
            table_name: table_name.into(),
            table_id: "tblFAKE00000000001".into(),
            pat: pat.into(),
            records: Vec::new(),
            extra_fields: Vec::new(),
            views: vec![FakeView::all("Grid view")],
            requests_per_second: 5,
            penalty: Duration::from_secs(30),
        }
    }
}

/// One request the fake received, and its answer's status.
#[derive(Debug, Clone, PartialEq)]
pub struct LoggedRequest {
    /// `GET`, `PATCH`, ...
    pub method: String,
    /// The percent-decoded path, e.g. `/v0/appX/Leads`.
    pub path: String,
    /// The decoded query parameters, in order.
    pub query: Vec<(String, String)>,
    /// The JSON body, if there was one.
    pub body: Option<Value>,
    /// The status the fake answered with.
    pub status: u16,
    /// When the request arrived.
    pub at: Instant,
}

impl LoggedRequest {
    /// The first value of a query parameter.
    pub fn query_value(&self, name: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// A running fake Airtable; the server stops when this is dropped.
#[derive(Debug)]
pub struct FakeAirtable {
    shared: Arc<Shared>,
    base_url: String,
    server: JoinHandle<()>,
}

#[derive(Debug)]
struct Shared {
    setup: FakeAirtableSetup,
    state: Mutex<TableState>,
}

#[derive(Debug)]
struct TableState {
    records: Vec<FakeRecord>,
    field_names: BTreeSet<String>,
    iterators: HashMap<String, ListIterator>,
    expire_on_next_offset: bool,
    next_id: u64,
    tokens: f64,
    refilled_at: Instant,
    penalty_until: Option<Instant>,
    scripted: VecDeque<(StatusCode, Value)>,
    log: Vec<LoggedRequest>,
}

#[derive(Debug, Clone)]
struct ListIterator {
    ids: Arc<Vec<String>>,
    position: usize,
}

type Reply = (StatusCode, Value);

/// One record of a write request: its id (absent when creating) and its fields.
type WriteItem = (Option<String>, Map<String, Value>);

fn error(status: StatusCode, error_type: &str, message: impl Into<String>) -> Reply {
    (
        status,
        json!({"error": {"type": error_type, "message": message.into()}}),
    )
}

fn unprocessable(error_type: &str, message: impl Into<String>) -> Reply {
    error(StatusCode::UNPROCESSABLE_ENTITY, error_type, message)
}

fn not_found_bare() -> Reply {
    (StatusCode::NOT_FOUND, json!({"error": "NOT_FOUND"}))
}

fn is_empty_value(value: &Value) -> bool {
    match value {
        Value::Null => true,
        Value::String(s) => s.is_empty(),
        Value::Array(items) => items.is_empty(),
        Value::Bool(b) => !b,
        _ => false,
    }
}

impl FakeAirtable {
    /// Starts the fake on `127.0.0.1:0` on the current tokio runtime.
    pub async fn start(setup: FakeAirtableSetup) -> std::io::Result<Self> {
        let mut field_names: BTreeSet<String> = setup.extra_fields.iter().cloned().collect();
        let mut records = setup.records.clone();
        for record in &mut records {
            field_names.extend(record.fields.keys().cloned());
            record.fields.retain(|_, v| !is_empty_value(v));
        }
        let state = TableState {
            records,
            field_names,
            iterators: HashMap::new(),
            expire_on_next_offset: false,
            next_id: 1,
            tokens: f64::from(setup.requests_per_second),
            refilled_at: Instant::now(),
            penalty_until: None,
            scripted: VecDeque::new(),
            log: Vec::new(),
        };
        let shared = Arc::new(Shared {
            setup,
            state: Mutex::new(state),
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let address = listener.local_addr()?;
        let app = Router::new()
            .fallback(handle)
            .with_state(Arc::clone(&shared));
        let server = tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app).await {
                eprintln!("fake Airtable server stopped: {e}");
            }
        });
        Ok(Self {
            shared,
            base_url: format!("http://{address}/v0"),
            server,
        })
    }

    /// The API root to configure clients with: `http://127.0.0.1:PORT/v0`.
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// Answers the next `n` requests (whatever they are) with `status` and `body`.
    pub fn fail_next(&self, n: usize, status: u16, body: Value) {
        let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut state = self.shared.lock();
        for _ in 0..n {
            state.scripted.push_back((status, body.clone()));
        }
    }

    /// Expires every list iterator, now and once more when the next request carrying an
    /// `offset` arrives: that request gets 422 `LIST_RECORDS_ITERATOR_NOT_AVAILABLE` even if
    /// its iterator was handed out after this call. Later iterators work again.
    pub fn expire_iterators(&self) {
        let mut state = self.shared.lock();
        state.iterators.clear();
        state.expire_on_next_offset = true;
    }

    /// The table's records as they are now (empty values omitted).
    pub fn records(&self) -> Vec<FakeRecord> {
        self.shared.lock().records.clone()
    }

    /// One record as it is now.
    pub fn record(&self, id: &str) -> Option<FakeRecord> {
        self.shared
            .lock()
            .records
            .iter()
            .find(|r| r.id == id)
            .cloned()
    }

    /// Sets a field of a record, as a person editing the base would (e.g. moving
    /// `Engagement_Status` to "Meeting Booked"). Returns false when there is no such record.
    pub fn set_field(&self, id: &str, field: &str, value: Value) -> bool {
        let mut state = self.shared.lock();
        match state.records.iter_mut().find(|r| r.id == id) {
            Some(r) => {
                r.fields.insert(field.to_owned(), value);
                true
            }
            None => false,
        }
    }

    /// Every request received so far, in arrival order.
    pub fn requests(&self) -> Vec<LoggedRequest> {
        self.shared.lock().log.clone()
    }

    /// Forgets the requests received so far.
    pub fn clear_requests(&self) {
        self.shared.lock().log.clear();
    }
}

impl Drop for FakeAirtable {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, TableState> {
        // A panicking test thread must not make every later inspection panic too.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

async fn handle(
    State(shared): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let now = Instant::now();
    let path: Vec<String> = uri
        .path()
        .split('/')
        .filter(|s| !s.is_empty())
        .map(|s| percent_decode(s, false))
        .collect();
    let query = parse_query(uri.query().unwrap_or(""));
    let parsed_body: Option<Result<Value, ()>> =
        (!body.is_empty()).then(|| serde_json::from_slice(&body).map_err(|_| ()));
    let authorized = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v == format!("Bearer {}", shared.setup.pat));

    let mut state = shared.lock();
    let (status, reply) = state.respond(
        &shared.setup,
        &method,
        &path,
        &query,
        parsed_body.as_ref(),
        authorized,
        now,
    );
    state.log.push(LoggedRequest {
        method: method.to_string(),
        path: format!("/{}", path.join("/")),
        query,
        body: parsed_body.and_then(Result::ok),
        status: status.as_u16(),
        at: now,
    });
    drop(state);
    (
        status,
        [(header::CONTENT_TYPE, "application/json; charset=utf-8")],
        reply.to_string(),
    )
        .into_response()
}

impl TableState {
    #[allow(clippy::too_many_arguments)]
    fn respond(
        &mut self,
        setup: &FakeAirtableSetup,
        method: &Method,
        path: &[String],
        query: &[(String, String)],
        body: Option<&Result<Value, ()>>,
        authorized: bool,
        now: Instant,
    ) -> Reply {
        if let Some(scripted) = self.scripted.pop_front() {
            return scripted;
        }
        if !authorized {
            return error(
                StatusCode::UNAUTHORIZED,
                "AUTHENTICATION_REQUIRED",
                "Authentication required",
            );
        }
        let (base, table, record) = match path {
            [v0, base, table] if v0 == "v0" => (base, table, None),
            [v0, base, table, record] if v0 == "v0" => (base, table, Some(record.as_str())),
            _ => return not_found_bare(),
        };
        if *base != setup.base_id {
            return not_found_bare();
        }
        if !self.admit(setup, now) {
            return error(
                StatusCode::TOO_MANY_REQUESTS,
                "TOO_MANY_REQUESTS",
                "You have made too many requests in a single second. Please wait 30 seconds \
                 before trying again.",
            );
        }
        if *table != setup.table_name && *table != setup.table_id {
            return error(
                StatusCode::NOT_FOUND,
                "NOT_FOUND",
                format!("Could not find table {table} in application {base}"),
            );
        }
        let body = match body {
            None => None,
            Some(Ok(value)) => Some(value),
            Some(Err(())) => {
                return error(
                    StatusCode::BAD_REQUEST,
                    "INVALID_REQUEST_BODY",
                    "Could not parse the request body as JSON",
                )
            }
        };
        match (method.as_str(), record) {
            ("GET", None) => self.list(setup, query),
            ("GET", Some(id)) => match self.records.iter().find(|r| r.id == id) {
                Some(found) => (StatusCode::OK, found.to_json(None)),
                None => not_found_bare(),
            },
            ("PATCH", None) => self.update_batch(body, false),
            ("PUT", None) => self.update_batch(body, true),
            ("PATCH", Some(id)) => self.update_single(id, body, false),
            ("PUT", Some(id)) => self.update_single(id, body, true),
            ("POST", None) => self.create(body),
            (other, _) => unprocessable(
                "INVALID_REQUEST_UNKNOWN",
                format!("{other} on this path is not supported by the fake"),
            ),
        }
    }

    /// Takes a token from the base's bucket, or starts (or continues) the penalty.
    fn admit(&mut self, setup: &FakeAirtableSetup, now: Instant) -> bool {
        if let Some(until) = self.penalty_until {
            if now < until {
                return false;
            }
            self.penalty_until = None;
        }
        let rate = f64::from(setup.requests_per_second);
        let elapsed = now
            .saturating_duration_since(self.refilled_at)
            .as_secs_f64();
        self.tokens = (self.tokens + elapsed * rate).min(rate);
        self.refilled_at = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            self.penalty_until = Some(now + setup.penalty);
            false
        }
    }

    fn parse_formula(&self, source: &str) -> Result<Formula, Reply> {
        let invalid = |detail: String| {
            unprocessable(
                "INVALID_FILTER_BY_FORMULA",
                format!("The formula for filtering records is invalid: {detail}"),
            )
        };
        let formula = Formula::parse(source).map_err(invalid)?;
        let unknown: Vec<String> = formula
            .fields()
            .into_iter()
            .filter(|f| !self.field_names.contains(f))
            .collect();
        if !unknown.is_empty() {
            return Err(invalid(format!(
                "Unknown field names: {}",
                unknown.join(", ")
            )));
        }
        Ok(formula)
    }

    fn list(&mut self, setup: &FakeAirtableSetup, query: &[(String, String)]) -> Reply {
        let bad_parameter = |message: String| unprocessable("INVALID_REQUEST_UNKNOWN", message);
        let mut page_size = MAX_PAGE_SIZE;
        let mut max_records: Option<usize> = None;
        let mut view: Option<&str> = None;
        let mut filter: Option<&str> = None;
        let mut offset: Option<&str> = None;
        let mut only_fields: Option<Vec<String>> = None;
        for (name, value) in query {
            match name.as_str() {
                "pageSize" => match value.parse::<usize>() {
                    Ok(n) if (1..=MAX_PAGE_SIZE).contains(&n) => page_size = n,
                    _ => {
                        return bad_parameter(format!(
                        "Invalid request: pageSize must be an integer from 1 to 100, got {value:?}"
                    ))
                    }
                },
                "maxRecords" => match value.parse::<usize>() {
                    Ok(n) if n >= 1 => max_records = Some(n),
                    _ => {
                        return bad_parameter(format!(
                            "Invalid request: maxRecords must be a positive integer, got {value:?}"
                        ))
                    }
                },
                "view" => view = Some(value),
                "filterByFormula" => filter = Some(value),
                "offset" => offset = Some(value),
                "fields[]" => only_fields.get_or_insert_with(Vec::new).push(value.clone()),
                other => {
                    return bad_parameter(format!(
                        "Invalid request: the query parameter {other:?} is unknown or not \
                         supported by the fake"
                    ))
                }
            }
        }
        if let Some(fields) = &only_fields {
            if let Some(unknown) = fields.iter().find(|f| !self.field_names.contains(*f)) {
                return unprocessable(
                    "UNKNOWN_FIELD_NAME",
                    format!("Unknown field name: {unknown:?}"),
                );
            }
        }

        if offset.is_some() && self.expire_on_next_offset {
            self.expire_on_next_offset = false;
            self.iterators.clear();
        }
        let iterator = match offset {
            Some(token) => match self.iterators.get(token) {
                Some(iterator) => iterator.clone(),
                None => {
                    return unprocessable(
                        "LIST_RECORDS_ITERATOR_NOT_AVAILABLE",
                        "The list records iterator is not available; restart the listing",
                    )
                }
            },
            None => {
                let mut formulas = Vec::new();
                if let Some(name) = view {
                    match setup.views.iter().find(|v| v.name == name) {
                        Some(found) => formulas.extend(found.formula.clone()),
                        None => {
                            return unprocessable(
                                "VIEW_NAME_NOT_FOUND",
                                format!("Could not find view {name:?} in table"),
                            )
                        }
                    }
                }
                formulas.extend(filter.map(str::to_owned));
                let mut parsed = Vec::new();
                for source in &formulas {
                    match self.parse_formula(source) {
                        Ok(formula) => parsed.push(formula),
                        Err(reply) => return reply,
                    }
                }
                let mut ids: Vec<String> = self
                    .records
                    .iter()
                    .filter(|r| parsed.iter().all(|f| f.matches(&r.id, &r.fields)))
                    .map(|r| r.id.clone())
                    .collect();
                if let Some(max) = max_records {
                    ids.truncate(max);
                }
                ListIterator {
                    ids: Arc::new(ids),
                    position: 0,
                }
            }
        };

        let end = (iterator.position + page_size).min(iterator.ids.len());
        let page: Vec<Value> = iterator.ids[iterator.position..end]
            .iter()
            .filter_map(|id| self.records.iter().find(|r| &r.id == id))
            .map(|r| r.to_json(only_fields.as_deref()))
            .collect();
        let mut response = json!({ "records": page });
        if end < iterator.ids.len() {
            let token = format!("itr{:014x}/{}", self.next_id, iterator.ids[end]);
            self.next_id += 1;
            self.iterators.insert(
                token.clone(),
                ListIterator {
                    ids: Arc::clone(&iterator.ids),
                    position: end,
                },
            );
            response["offset"] = Value::String(token);
        }
        (StatusCode::OK, response)
    }

    /// Reads `{"records":[...], "typecast": bool}`; `with_ids` says whether ids are required.
    fn write_records(&self, body: Option<&Value>, with_ids: bool) -> Result<Vec<WriteItem>, Reply> {
        let invalid = || {
            unprocessable(
                "INVALID_RECORDS",
                "You must provide an array of up to 10 record objects, each with a fields object",
            )
        };
        let Some(Value::Object(body)) = body else {
            return Err(unprocessable(
                "INVALID_REQUEST_MISSING_FIELDS",
                "Could not find field \"records\" in the request body",
            ));
        };
        for (key, value) in body {
            match key.as_str() {
                "records" => {}
                "typecast" if value.is_boolean() => {}
                "performUpsert" => {
                    return Err(unprocessable(
                        "INVALID_REQUEST_UNKNOWN",
                        "performUpsert is not supported by the fake",
                    ))
                }
                other => {
                    return Err(unprocessable(
                        "INVALID_REQUEST_UNKNOWN",
                        format!("Invalid request: the body key {other:?} is unknown or invalid"),
                    ))
                }
            }
        }
        let Some(Value::Array(items)) = body.get("records") else {
            return Err(invalid());
        };
        if items.is_empty() || items.len() > MAX_RECORDS_PER_WRITE {
            return Err(invalid());
        }
        let mut out = Vec::with_capacity(items.len());
        for item in items {
            let Some(Value::Object(fields)) = item.get("fields") else {
                return Err(invalid());
            };
            let id = match (item.get("id"), with_ids) {
                (Some(Value::String(id)), true) => Some(id.clone()),
                (None, false) => None,
                _ => return Err(invalid()),
            };
            out.push((id, fields.clone()));
        }
        Ok(out)
    }

    fn check_field_names(&self, fields: &Map<String, Value>) -> Result<(), Reply> {
        match fields.keys().find(|k| !self.field_names.contains(*k)) {
            Some(unknown) => Err(unprocessable(
                "UNKNOWN_FIELD_NAME",
                format!("Unknown field name: {unknown:?}"),
            )),
            None => Ok(()),
        }
    }

    fn apply(&mut self, index: usize, fields: Map<String, Value>, replace: bool) -> Value {
        let record = &mut self.records[index];
        if replace {
            record.fields.clear();
        }
        for (name, value) in fields {
            if is_empty_value(&value) {
                record.fields.remove(&name);
            } else {
                record.fields.insert(name, value);
            }
        }
        record.to_json(None)
    }

    fn update_batch(&mut self, body: Option<&Value>, replace: bool) -> Reply {
        let updates = match self.write_records(body, true) {
            Ok(updates) => updates,
            Err(reply) => return reply,
        };
        let mut resolved = Vec::with_capacity(updates.len());
        for (id, fields) in updates {
            let id = id.unwrap_or_default();
            if let Err(reply) = self.check_field_names(&fields) {
                return reply;
            }
            match self.records.iter().position(|r| r.id == id) {
                Some(index) => resolved.push((index, fields)),
                None => {
                    return unprocessable(
                        "ROW_DOES_NOT_EXIST",
                        format!("Record ID {id} does not exist in this table"),
                    )
                }
            }
        }
        let records: Vec<Value> = resolved
            .into_iter()
            .map(|(index, fields)| self.apply(index, fields, replace))
            .collect();
        (StatusCode::OK, json!({ "records": records }))
    }

    fn update_single(&mut self, id: &str, body: Option<&Value>, replace: bool) -> Reply {
        let Some(Value::Object(fields)) = body.and_then(|b| b.get("fields")) else {
            return unprocessable(
                "INVALID_REQUEST_MISSING_FIELDS",
                "Could not find field \"fields\" in the request body",
            );
        };
        if let Err(reply) = self.check_field_names(fields) {
            return reply;
        }
        match self.records.iter().position(|r| r.id == id) {
            Some(index) => (StatusCode::OK, self.apply(index, fields.clone(), replace)),
            None => not_found_bare(),
        }
    }

    fn create(&mut self, body: Option<&Value>) -> Reply {
        let creates = match self.write_records(body, false) {
            Ok(creates) => creates,
            Err(reply) => return reply,
        };
        for (_, fields) in &creates {
            if let Err(reply) = self.check_field_names(fields) {
                return reply;
            }
        }
        let mut created = Vec::with_capacity(creates.len());
        for (_, fields) in creates {
            let id = format!("recNEW{:011}", self.next_id);
            self.next_id += 1;
            self.records.push(FakeRecord {
                id,
                created_time: "2024-06-01T00:00:00.000Z".into(),
                fields: Map::new(),
            });
            let index = self.records.len() - 1;
            created.push(self.apply(index, fields, true));
        }
        (StatusCode::OK, json!({ "records": created }))
    }
}

fn parse_query(raw: &str) -> Vec<(String, String)> {
    raw.split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(name, true), percent_decode(value, true))
        })
        .collect()
}

/// Decodes `%XX` escapes (and `+` as a space in query strings); bad escapes stay as they are.
fn percent_decode(input: &str, plus_is_space: bool) -> String {
    let bytes = input.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3])
                    .ok()
                    .and_then(|h| u8::from_str_radix(h, 16).ok());
                match hex {
                    Some(byte) => {
                        out.push(byte);
                        i += 3;
                    }
                    None => {
                        out.push(b'%');
                        i += 1;
                    }
                }
            }
            b'+' if plus_is_space => {
                out.push(b' ');
                i += 1;
            }
            byte => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_decoding() {
        assert_eq!(percent_decode("Lead%20List", false), "Lead List");
        assert_eq!(percent_decode("a+b", true), "a b");
        assert_eq!(percent_decode("a+b", false), "a+b");
        assert_eq!(
            percent_decode("%7BStatus%7D%3D%27x%27", true),
            "{Status}='x'"
        );
        assert_eq!(percent_decode("100%", true), "100%");
        assert_eq!(percent_decode("%zz%4", true), "%zz%4");
        assert_eq!(percent_decode("caf%C3%A9", true), "café");
    }
}
