//! The background side of the queue: one task drains completion records, writes the record
//! log, and fans each record out to its tenant's destinations — checking the broadcast
//! switch, each destination's key allowlist and sampling — onto the destinations' workers.
//! On shutdown it drains the queue and lets the workers flush, up to a deadline.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use std::time::Duration;

use beacon_config::TenantConfig;
use tokio::sync::{mpsc, oneshot, watch};

use crate::destination::{DestinationError, DestinationSpec};
use crate::ingress::Queued;
use crate::ledger::Ledger;
use crate::recent::Recent;
use crate::record_log::RecordLog;
use crate::sampling;
use crate::sink::{self, Sink, SinkConfig};
use crate::stats::{DropReason, Stats};
use crate::tools::ToolCalls;

/// How often the router drains the hand-off queue while records are flowing.
pub const POLL_INTERVAL: Duration = Duration::from_millis(5);
/// Empty polls (100 ms) after which the router stops polling and waits for the next record.
pub const IDLE_POLLS_BEFORE_WAITING: u32 = 20;

/// Settings of the pipeline.
#[derive(Debug, Clone)]
pub struct PipelineConfig {
    /// Hand-off queue capacity in records.
    pub queue_capacity: usize,
    /// Bytes of records the whole export path may hold.
    pub queue_max_bytes: usize,
    /// JSON-lines file receiving every record (content excluded).
    pub record_log: Option<PathBuf>,
    /// How long the queue and the workers keep draining after shutdown begins.
    pub shutdown_deadline: Duration,
    /// Allow `http://` and private destination addresses.
    pub allow_private_destinations: bool,
    /// Batching and sending.
    pub sink: SinkConfig,
    /// Connect timeout towards destinations.
    pub connect_timeout: Duration,
}

impl From<&beacon_config::BroadcastConfig> for PipelineConfig {
    fn from(c: &beacon_config::BroadcastConfig) -> Self {
        Self {
            queue_capacity: c.queue_capacity,
            queue_max_bytes: c.queue_max_bytes,
            record_log: c.record_log.clone(),
            shutdown_deadline: c.shutdown_deadline,
            allow_private_destinations: c.allow_private_destinations,
            sink: SinkConfig {
                queue_capacity: c.destination_queue_capacity,
                max_bytes: c.destination_queue_max_bytes,
                max_batch: c.max_batch_records,
                flush_interval: c.flush_interval,
                request_timeout: c.export_timeout,
                error_events_per_minute: c.error_events_per_minute,
            },
            connect_timeout: Duration::from_secs(5),
        }
    }
}

/// A tenant's broadcast switch and destination workers.
#[derive(Debug, Clone, Default)]
pub struct TenantRoute {
    /// The broadcast switch.
    pub enabled: bool,
    /// One worker per destination.
    pub sinks: Vec<Sink>,
}

/// Why the pipeline could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A declared destination is invalid.
    #[error("tenants[{tenant}].broadcast.destinations[{index}].{source}")]
    Destination {
        /// Tenant index in the config.
        tenant: usize,
        /// Destination index in the tenant.
        index: usize,
        /// What is wrong.
        source: DestinationError,
    },
    /// Several declared destinations are invalid (each line names one field).
    #[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n  - "))]
    Destinations(Vec<StartError>),
    /// TLS could not be set up.
    #[error("TLS setup failed: {0}")]
    Tls(#[from] rustls::Error),
    /// The export thread could not start.
    #[error("cannot start the export runtime: {0}")]
    Runtime(std::io::Error),
}

/// Validates every destination (what `beacon check` and `beacon serve` run): the specs to
/// run, per tenant; see [`runnable`] for how invalid ones are treated.
pub fn validate_destinations(
    tenants: &[TenantConfig],
    allow_private: bool,
) -> Result<Vec<Vec<DestinationSpec>>, StartError> {
    runnable(tenants, allow_private)
}

/// The destinations to run, per tenant. A declared destination (from the config file) that
/// is invalid is an error; a stored one (it has an id) that became invalid — say, stored
/// while private addresses were allowed and loaded by a node that does not allow them — is
/// skipped with a warning, so one bad row cannot stop every other tenant's changes.
fn runnable(
    tenants: &[TenantConfig],
    allow_private: bool,
) -> Result<Vec<Vec<DestinationSpec>>, StartError> {
    let mut invalid = Vec::new();
    let specs = tenants
        .iter()
        .enumerate()
        .map(|(t, tenant)| {
            let mut specs = Vec::with_capacity(tenant.broadcast.destinations.len());
            for (index, d) in tenant.broadcast.destinations.iter().enumerate() {
                match DestinationSpec::new(&tenant.id, d, allow_private) {
                    Ok(spec) => specs.push(spec),
                    Err(source) if d.id.is_some() => {
                        tracing::warn!(tenant = %tenant.id, destination = ?d.id, error = %source, "stored destination skipped: it is not valid on this node");
                    }
                    Err(source) => invalid.push(StartError::Destination {
                        tenant: t,
                        index,
                        source,
                    }),
                }
            }
            specs
        })
        .collect();
    match invalid.len() {
        0 => Ok(specs),
        1 => Err(invalid.remove(0)),
        _ => Err(StartError::Destinations(invalid)),
    }
}

/// The route table: tenant id → switch and destination workers. Swapped whole on reload.
pub type Routes = HashMap<String, TenantRoute>;

/// What it takes to start destination workers on the export runtime.
#[derive(Debug)]
struct Spawner {
    runtime: tokio::runtime::Handle,
    client: sink::http::ExportClient,
    stats: Arc<Stats>,
    sink: SinkConfig,
    allow_private: bool,
    deadline_rx: watch::Receiver<bool>,
    workers: Mutex<Vec<tokio::task::JoinHandle<()>>>,
}

impl Spawner {
    /// Builds the route table for `tenants`, keeping the running worker of every destination
    /// whose settings did not change and starting workers for new or changed ones.
    fn routes(&self, tenants: &[TenantConfig], current: &Routes) -> Result<Routes, StartError> {
        let specs = runnable(tenants, self.allow_private)?;
        let _in_export_runtime = self.runtime.enter();
        let mut routes = HashMap::new();
        for (tenant, specs) in tenants.iter().zip(specs) {
            let running = current
                .get(&tenant.id)
                .map(|r| r.sinks.as_slice())
                .unwrap_or_default();
            let mut sinks = Vec::with_capacity(specs.len());
            for spec in specs {
                match running.iter().find(|s| *s.spec == spec) {
                    Some(same) => sinks.push(same.clone()),
                    None => {
                        let health = running
                            .iter()
                            .find(|s| s.spec.id == spec.id)
                            .map(|s| s.health.clone());
                        let (s, handle) = sink::spawn(
                            spec,
                            health,
                            self.client.clone(),
                            self.stats.clone(),
                            self.sink,
                            self.deadline_rx.clone(),
                        );
                        if let Ok(mut w) = self.workers.lock() {
                            w.push(handle);
                        }
                        sinks.push(s);
                    }
                }
            }
            routes.insert(
                tenant.id.clone(),
                TenantRoute {
                    enabled: tenant.broadcast.enabled,
                    sinks,
                },
            );
        }
        Ok(routes)
    }
}

/// Changes the pipeline's tenants while it runs. Cheap to clone.
#[derive(Debug, Clone)]
pub struct PipelineControl {
    routes: Arc<ArcSwap<Routes>>,
    spawner: Arc<Spawner>,
    recent: Arc<Recent>,
    ledger: Arc<Ledger>,
}

impl PipelineControl {
    /// Applies a new set of tenants: switches, and destinations added, changed or removed.
    /// Removed destinations' workers send what they hold and stop.
    pub fn reload(&self, tenants: &[TenantConfig]) -> Result<(), StartError> {
        let next = self.spawner.routes(tenants, &self.routes.load())?;
        self.routes.store(Arc::new(next));
        Ok(())
    }

    /// The current destination workers, by tenant.
    pub fn routes(&self) -> Arc<Routes> {
        self.routes.load_full()
    }

    /// The last records this node exported (the Recent completions view).
    pub fn recent(&self) -> &Recent {
        &self.recent
    }

    /// The usage rows counted since the last flush (SPEC §5.1).
    pub fn ledger(&self) -> &Arc<Ledger> {
        &self.ledger
    }
}

/// Owner of the running pipeline; [`PipelineHandle::shutdown`] flushes and stops it.
#[derive(Debug)]
pub struct PipelineHandle {
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
    control: PipelineControl,
    /// The export runtime: its own thread, so span encoding never runs on (or delays) the
    /// proxy's worker threads.
    runtime: Option<tokio::runtime::Runtime>,
}

impl Drop for PipelineHandle {
    fn drop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            // Callable from async contexts, unlike dropping the runtime.
            rt.shutdown_background();
        }
    }
}

impl PipelineHandle {
    /// A handle for reloading tenants while the pipeline runs.
    pub fn control(&self) -> PipelineControl {
        self.control.clone()
    }

    /// Drains the queue and lets the workers flush, up to the shutdown deadline; whatever is
    /// still undelivered then is counted as [`DropReason::ShutdownDeadline`]. An error means
    /// the pipeline's task failed (and is logged).
    pub async fn shutdown(mut self) -> Result<(), String> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        (&mut self.task).await.map_err(|e| {
            tracing::error!(error = %e, "broadcast pipeline task failed");
            e.to_string()
        })
    }
}

/// Starts the router task and one worker per declared destination.
pub(crate) fn spawn(
    config: PipelineConfig,
    tenants: &[TenantConfig],
    rx: mpsc::Receiver<Arc<Queued>>,
    stats: Arc<Stats>,
) -> Result<PipelineHandle, StartError> {
    // Validate before the export runtime exists: a runtime dropped inside the caller's async
    // context on an error path would panic.
    runnable(tenants, config.allow_private_destinations)?;
    let client = sink::http::client(config.connect_timeout, config.allow_private_destinations)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("beacon-export")
        .enable_all()
        .build()
        .map_err(StartError::Runtime)?;
    let (deadline_tx, deadline_rx) = watch::channel(false);
    let spawner = Arc::new(Spawner {
        runtime: runtime.handle().clone(),
        client,
        stats: stats.clone(),
        sink: config.sink,
        allow_private: config.allow_private_destinations,
        deadline_rx,
        workers: Mutex::new(Vec::new()),
    });
    let routes = Arc::new(ArcSwap::from_pointee(
        spawner.routes(tenants, &HashMap::new())?,
    ));
    let recent = Arc::new(Recent::default());
    let ledger = Arc::new(Ledger::default());
    let control = PipelineControl {
        routes: routes.clone(),
        spawner: spawner.clone(),
        recent: recent.clone(),
        ledger: ledger.clone(),
    };
    let (stop_tx, stop_rx) = oneshot::channel();
    let router = Router {
        routes,
        stats,
        warned: AtomicBool::new(false),
        recent,
        ledger,
        tools: Mutex::new(ToolCalls::default()),
    };
    let task = runtime.spawn(run(config, rx, router, stop_rx, deadline_tx, spawner));
    Ok(PipelineHandle {
        runtime: Some(runtime),
        stop: Some(stop_tx),
        task,
        control,
    })
}

struct Router {
    routes: Arc<ArcSwap<Routes>>,
    stats: Arc<Stats>,
    warned: AtomicBool,
    recent: Arc<Recent>,
    ledger: Arc<Ledger>,
    /// Tool calls waiting for their results (SPEC §4.5); only this thread uses it.
    tools: Mutex<ToolCalls>,
}

impl Router {
    /// Links a broadcasting tenant's record to the tool calls its tool results answer
    /// (SPEC §4.5), before it is logged and fanned out.
    fn link_tools(&self, record: &mut Queued) {
        if record.tools.is_empty() {
            return;
        }
        let broadcasting = self
            .routes
            .load()
            .get(&record.tenant_id)
            .is_some_and(|r| r.enabled && !r.sinks.is_empty());
        if broadcasting {
            let mut tools = match self.tools.lock() {
                Ok(g) => g,
                Err(p) => p.into_inner(),
            };
            tools.link(&mut record.record);
        }
    }

    /// Fans a record out to its tenant's destinations, counting every destination it skips.
    fn route(&self, record: Arc<Queued>) {
        let routes = self.routes.load();
        // Counted and tracked whether or not it goes anywhere.
        self.ledger.add(&record.record);
        let entry = self.recent.track(&record.record);
        let Some(route) = routes.get(&record.tenant_id) else {
            return;
        };
        if !route.enabled || route.sinks.is_empty() {
            return;
        }
        for sink in &route.sinks {
            if !sink.spec.enabled {
                continue;
            }
            let slot = entry
                .as_ref()
                .map(|e| e.add(&sink.spec.id, &sink.spec.name));
            let caller_dropped = sink.spec.follow_caller_sampling
                && record.trace_context.as_ref().and_then(|t| t.sampled) == Some(false);
            if !sink.spec.accepts_key(&record.key_id) {
                if let Some(slot) = slot {
                    slot.dropped(DropReason::Filtered);
                }
                sink.drop_one(&self.stats, DropReason::Filtered);
            } else if caller_dropped
                || !sampling::keep(
                    sink.spec.sampling_rate,
                    &sink.spec.id,
                    record.session_id.as_deref(),
                    &record.request_id,
                )
            {
                if let Some(slot) = slot {
                    slot.dropped(DropReason::SampledOut);
                }
                sink.drop_one(&self.stats, DropReason::SampledOut);
            } else {
                // Each copy counts itself in for what the destinations share (sink::Held).
                let refused = !sink.offer(record.clone(), &self.stats, slot);
                if refused && !self.warned.swap(true, Ordering::Relaxed) {
                    tracing::warn!(destination = %sink.spec.name, "a destination queue is full: dropping records for it (counted in beacon_broadcast_dropped_total)");
                }
            }
        }
    }
}

async fn run(
    config: PipelineConfig,
    mut rx: mpsc::Receiver<Arc<Queued>>,
    router: Router,
    mut stop: oneshot::Receiver<()>,
    deadline_tx: watch::Sender<bool>,
    spawner: Arc<Spawner>,
) {
    let mut log = match &config.record_log {
        Some(path) => match RecordLog::open(path).await {
            Ok(log) => Some(log),
            Err(e) => {
                tracing::error!(path = %path.display(), error = %e, "cannot open broadcast.record_log; records will not be logged");
                None
            }
        },
        None => None,
    };
    let stats = router.stats.clone();
    // While records flow, the queue is polled on a short tick instead of awaited record by
    // record: a receiver that never registers a waker costs the proxy's `try_send` no
    // cross-thread wake-up, so handing a record off stays a few atomic operations however
    // busy the gateway is. After 100 ms without a record the router waits instead, so an idle
    // gateway does not wake 200 times a second; the record that ends the wait costs its
    // sender one wake-up, and polling resumes.
    let mut tick = tokio::time::interval(POLL_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut idle_polls = 0u32;
    loop {
        if idle_polls >= IDLE_POLLS_BEFORE_WAITING {
            tokio::select! {
                biased;
                _ = &mut stop => break,
                record = rx.recv() => match record {
                    Some(record) => {
                        drain(Some(record), &mut rx, &mut log, &router).await;
                        idle_polls = 0;
                        tick.reset();
                    }
                    // Every sender is gone: nothing more can arrive; wait for the stop.
                    None => {
                        let _ = (&mut stop).await;
                        break;
                    }
                },
            }
            continue;
        }
        tokio::select! {
            biased;
            _ = &mut stop => break,
            _ = tick.tick() => {
                if drain(None, &mut rx, &mut log, &router).await {
                    idle_polls = 0;
                } else {
                    idle_polls += 1;
                }
            }
        }
    }

    // Shutdown: the server has stopped, so no new records are produced. Drain the queue,
    // then close the workers' queues and let them flush, all within the deadline.
    rx.close();
    let deadline = tokio::time::Instant::now() + config.shutdown_deadline;
    let mut flushed = 0u64;
    loop {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some(record)) => {
                deliver(record, &mut log, &router).await;
                flushed += 1;
            }
            Ok(None) => break,
            Err(_) => {
                while let Ok(record) = rx.try_recv() {
                    stats.record_dropped(&record.tenant_id, "", DropReason::ShutdownDeadline);
                }
                break;
            }
        }
    }
    if let Some(log) = log.as_mut() {
        log.flush().await;
    }
    // Close every worker's queue: they send what they hold and stop.
    router.routes.store(Arc::new(HashMap::new()));
    drop(router);
    let workers = spawner
        .workers
        .lock()
        .map(|mut w| std::mem::take(&mut *w))
        .unwrap_or_default();
    let mut workers: tokio::task::JoinSet<()> = {
        // Each handle is awaited exactly once, through the set: a worker that finished
        // before the deadline is never polled again after it (a JoinHandle polled after
        // completion panics).
        let mut set = tokio::task::JoinSet::new();
        for w in workers {
            set.spawn(async move {
                if let Err(e) = w.await {
                    tracing::error!(error = %e, "a destination worker failed");
                }
            });
        }
        set
    };
    let all_done = async { while workers.join_next().await.is_some() {} };
    if tokio::time::timeout_at(deadline, all_done).await.is_err() {
        // Tell workers and in-flight sends that time is up; they count what they still hold.
        let _ = deadline_tx.send(true);
        while workers.join_next().await.is_some() {}
    }
    stats.set_queue_depth(0);
    tracing::info!(
        flushed,
        dropped_total = stats.dropped_total(),
        "broadcast pipeline stopped"
    );
}

/// Delivers `first` and every record waiting in the queue, then flushes the record log;
/// returns whether there was any.
async fn drain(
    first: Option<Arc<Queued>>,
    rx: &mut mpsc::Receiver<Arc<Queued>>,
    log: &mut Option<RecordLog>,
    router: &Router,
) -> bool {
    let mut any = false;
    if let Some(record) = first {
        deliver(record, log, router).await;
        any = true;
    }
    while let Ok(record) = rx.try_recv() {
        deliver(record, log, router).await;
        any = true;
    }
    router.stats.set_queue_depth(rx.len());
    if any {
        if let Some(log) = log.as_mut() {
            log.flush().await;
        }
    }
    any
}

async fn deliver(mut record: Arc<Queued>, log: &mut Option<RecordLog>, router: &Router) {
    // The queue held the only reference: nothing has shared the record yet.
    if let Some(record) = Arc::get_mut(&mut record) {
        router.link_tools(record);
    }
    if let Some(log) = log.as_mut() {
        log.write(&record.record).await;
    }
    router.route(record);
}

#[cfg(test)]
mod tests {
    use super::*;
    use beacon_config::{DestinationConfig, TenantBroadcastConfig};

    fn otlp(id: Option<&str>, endpoint: &str) -> DestinationConfig {
        DestinationConfig {
            id: id.map(String::from),
            name: endpoint.into(),
            enabled: true,
            type_name: "otlp".into(),
            fields: serde_json::json!({ "endpoint": endpoint })
                .as_object()
                .cloned()
                .unwrap_or_default(),
            privacy_mode: false,
            follow_caller_sampling: None,
            error_events: None,
            sampling_rate: 1.0,
            api_keys: vec![],
        }
    }

    fn tenant(destinations: Vec<DestinationConfig>) -> TenantConfig {
        TenantConfig {
            id: "acme".into(),
            name: "Acme".into(),
            api_keys: vec![],
            broadcast: TenantBroadcastConfig {
                enabled: true,
                destinations,
            },
            limits: Default::default(),
            key_limits: Default::default(),
        }
    }

    #[test]
    fn an_invalid_stored_destination_is_skipped_a_declared_one_is_an_error() {
        let specs = runnable(
            &[tenant(vec![
                otlp(Some("dst_a"), "http://127.0.0.1:4318/v1/traces"),
                otlp(Some("dst_b"), "https://collector.example.com/v1/traces"),
            ])],
            false,
        )
        .unwrap();
        assert_eq!(specs[0].len(), 1);
        assert_eq!(specs[0][0].id, "dst_b");
        let declared = runnable(
            &[tenant(vec![otlp(None, "http://127.0.0.1:4318/v1/traces")])],
            false,
        );
        assert!(matches!(
            declared,
            Err(StartError::Destination { index: 0, .. })
        ));
    }

    /// A destination that accepts connections and never answers.
    async fn hanging_destination() -> (String, tokio::task::JoinHandle<()>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/v1/traces", listener.local_addr().unwrap());
        let task = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((s, _)) = listener.accept().await {
                held.push(s);
            }
        });
        (url, task)
    }

    /// A destination that answers every request with 200 at once.
    async fn ok_destination() -> (String, tokio::task::JoinHandle<()>) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/v1/traces", listener.local_addr().unwrap());
        let task = tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 1 << 16];
                    while let Ok(n) = s.read(&mut buf).await {
                        if n == 0 {
                            break;
                        }
                        // One request per read is enough for these small batches.
                        let ok = b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n";
                        if s.write_all(ok).await.is_err() {
                            break;
                        }
                    }
                });
            }
        });
        (url, task)
    }

    /// A pipeline for `tenants` flushing every 20 ms, and the stats it counts into.
    fn start_quick(
        tenants: &[TenantConfig],
        shutdown_deadline: Duration,
    ) -> (crate::RecordSender, crate::PipelineHandle, Arc<Stats>) {
        let stats = Arc::new(Stats::default());
        let config = PipelineConfig {
            queue_capacity: 16,
            queue_max_bytes: 1 << 20,
            record_log: None,
            shutdown_deadline,
            allow_private_destinations: true,
            sink: SinkConfig {
                flush_interval: Duration::from_millis(20),
                request_timeout: Duration::from_secs(30),
                ..SinkConfig::default()
            },
            connect_timeout: Duration::from_secs(1),
        };
        let (sender, handle) = crate::start(config, tenants, stats.clone()).unwrap();
        (sender, handle, stats)
    }

    /// Waits up to 2 s for the tenant's first destination to export one record.
    async fn first_exported(handle: &crate::PipelineHandle) {
        for _ in 0..200 {
            if handle.control().routes()["acme"].sinks[0].health.exported() == 1 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Two destinations on one record: the first delivers, the second has encoded it and
    /// hangs on its POST (so it holds the record). Returns the bytes the export path still
    /// holds then, and the record's own charge.
    async fn held_while_a_second_destination_hangs(second_private: bool) -> (i64, i64) {
        let (fast, _f) = ok_destination().await;
        let (stuck, _s) = hanging_destination().await;
        let mut hanging = otlp(None, &stuck);
        hanging.privacy_mode = second_private;
        let tenants = [tenant(vec![otlp(None, &fast), hanging])];
        let (sender, handle, stats) = start_quick(&tenants, Duration::from_millis(200));
        let record = crate::span::tests::record();
        let charge = record.approx_bytes() as i64;
        assert!(sender.submit(record));
        first_exported(&handle).await;
        // Time for the second worker's batch to be encoded and its POST to start.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let held = stats.held_bytes_gauge().get();
        drop(sender);
        let _ = handle.shutdown().await;
        (held, charge)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_shared_conversion_is_let_go_once_every_destination_sending_content_has_it() {
        // Both send content: converted once, kept until the second encoded it, then let go
        // although that destination still holds the record.
        let (held, charge) = held_while_a_second_destination_hangs(false).await;
        assert_eq!(held, charge, "only the record is held");
        // The second is in privacy mode: one user, nothing kept at any time.
        let (held, charge) = held_while_a_second_destination_hangs(true).await;
        assert_eq!(held, charge, "only the record is held");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn shutdown_with_one_stuck_destination_and_one_finished_worker_does_not_panic() {
        let (fast, _f) = ok_destination().await;
        let (stuck, _s) = hanging_destination().await;
        // The finished worker comes first: it is awaited to completion before the deadline,
        // and must not be awaited again after it.
        let tenants = [tenant(vec![otlp(None, &fast), otlp(None, &stuck)])];
        let (sender, handle, _stats) = start_quick(&tenants, Duration::from_millis(500));
        assert!(sender.submit(crate::ingress::tests::record("acme")));
        // The fast destination delivers; the stuck one is waiting for its answer.
        first_exported(&handle).await;
        let routes = handle.control().routes();
        let (fast_health, stuck_health) = (
            routes["acme"].sinks[0].health.clone(),
            routes["acme"].sinks[1].health.clone(),
        );
        drop(routes);
        assert_eq!(fast_health.exported(), 1);
        drop(sender);
        assert_eq!(
            handle.shutdown().await,
            Ok(()),
            "the pipeline task must not panic"
        );
        assert_eq!(stuck_health.exported(), 0);
        assert_eq!(
            stuck_health.dropped_by_reason()[DropReason::ShutdownDeadline as usize].1,
            1,
            "the stuck destination's record is counted at the deadline"
        );
        assert_eq!(
            stuck_health.held_bytes(),
            0,
            "nothing is held after shutdown"
        );
    }
}
