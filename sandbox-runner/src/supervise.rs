//! Watching a running sandbox: relaying its output, serving its proxy, enforcing the wall-clock,
//! CPU and output limits, and reporting every event until it has exited and, on the control
//! channel, until the gateway has acknowledged everything.

#![allow(unsafe_code)] // System calls without safe wrappers; each block says why it is sound.

use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use nix::sys::resource::{UsageWho, getrusage};
use nix::sys::signal::{Signal, kill, killpg};
use nix::sys::wait::{WaitStatus, waitpid};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::unix::pipe;
use tokio::sync::{Notify, mpsc, watch};
use tokio::time::Instant;

use crate::protocol::{Control, Envelope, Event, LaunchSpec, LimitKind, Tier, Usage};
use crate::sandbox::Running;

const DEFAULT_GRACE_MS: u64 = 2_000;
const CPU_POLL: Duration = Duration::from_millis(100);
/// How long the runner waits for the gateway to acknowledge its last events.
const ACK_WAIT: Duration = Duration::from_secs(30);

/// Where events go.
pub enum Sink {
    /// `sandbox-runner run`: JSON lines on stdout, nothing acknowledged.
    Lines { seq: u64 },
    /// `sandbox-runner launch`: the control channel, each event acknowledged by the gateway.
    Control {
        seq: u64,
        writer: tokio::net::unix::OwnedWriteHalf,
        acked: watch::Receiver<u64>,
    },
}

impl Sink {
    pub async fn emit(&mut self, event: Event) {
        match self {
            Sink::Lines { seq } => {
                *seq += 1;
                let line = line(*seq, event);
                let mut out = tokio::io::stdout();
                let _ = out.write_all(line.as_bytes()).await;
                let _ = out.flush().await;
            }
            Sink::Control { seq, writer, .. } => {
                *seq += 1;
                let line = line(*seq, event);
                let _ = writer.write_all(line.as_bytes()).await;
            }
        }
    }

    /// Waits until the gateway has acknowledged every event, or has gone away.
    pub async fn drain(&mut self) {
        if let Sink::Control { seq, acked, .. } = self {
            let last = *seq;
            let _ = tokio::time::timeout(ACK_WAIT, acked.wait_for(|a| *a >= last)).await;
        }
    }
}

fn line(seq: u64, event: Event) -> String {
    let mut line = serde_json::to_string(&Envelope { seq, event })
        .unwrap_or_else(|e| format!("{{\"seq\":{seq},\"event\":\"failed\",\"message\":\"{e}\"}}"));
    line.push('\n');
    line
}

/// Reads the control channel: acknowledgements, and a stop request (or the gateway going away,
/// which is one too).
pub fn read_control<R: AsyncRead + Unpin + Send + 'static>(
    reader: R,
    acked: watch::Sender<u64>,
    stop: Arc<Notify>,
) {
    tokio::spawn(async move {
        let mut lines = BufReader::new(reader).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            match serde_json::from_str::<Control>(&line) {
                Ok(Control::Ack { ack }) => {
                    acked.send_modify(|a| *a = (*a).max(ack));
                }
                Ok(Control::Stop { .. }) => stop.notify_one(),
                Err(e) => eprintln!("sandbox-runner: ignoring a control message: {e}"),
            }
        }
        // The gateway is gone: nothing can be acknowledged any more, and the sandbox must end.
        acked.send_modify(|a| *a = u64::MAX);
        stop.notify_one();
    });
}

/// Output counted against the cap.
struct Output {
    bytes: AtomicU64,
    cap: Option<u64>,
    exceeded: Notify,
}

impl Output {
    fn add(&self, n: usize) -> bool {
        let total = self.bytes.fetch_add(n as u64, Ordering::Relaxed) + n as u64;
        let over = self.cap.is_some_and(|cap| total > cap);
        if over {
            self.exceeded.notify_one();
        }
        over
    }
}

/// Copies one of the program's streams: to the runner's own (launch), or into `output`
/// events (run). Stops at EOF or once the output cap is exceeded.
async fn relay(
    from: OwnedFd,
    stream: &'static str,
    to: Option<Box<dyn AsyncWrite + Unpin + Send>>,
    events: mpsc::UnboundedSender<Event>,
    output: Arc<Output>,
) {
    let Ok(mut from) = pipe::Receiver::from_owned_fd(from) else {
        return;
    };
    let mut to = to;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        let over = output.add(n);
        let chunk = &buf[..n];
        match to.as_mut() {
            Some(to) => {
                if over {
                    return;
                }
                if to.write_all(chunk).await.is_err() {
                    return;
                }
                let _ = to.flush().await;
            }
            None => {
                if over {
                    return;
                }
                let _ = events.send(Event::Output {
                    stream: stream.into(),
                    data: String::from_utf8_lossy(chunk).into_owned(),
                });
            }
        }
    }
}

/// The runner's stdout as an async writer: a non-blocking pipe when it is one (the gateway's
/// case, no thread hop per write), else tokio's blocking-pool stdout.
fn own_stdout() -> Box<dyn AsyncWrite + Unpin + Send> {
    match std::os::fd::AsFd::as_fd(&std::io::stdout())
        .try_clone_to_owned()
        .ok()
        .and_then(|fd| pipe::Sender::from_owned_fd(fd).ok())
    {
        Some(sender) => Box::new(sender),
        None => Box::new(tokio::io::stdout()),
    }
}

fn signal_name(signal: i32) -> String {
    Signal::try_from(signal).map_or_else(|_| signal.to_string(), |s| s.as_str().to_owned())
}

/// How the program ended: from the init's status line, else from the waited process.
fn program_status(status_line: &str, waited: Option<WaitStatus>) -> (Option<i32>, Option<i32>) {
    let mut words = status_line.split_whitespace();
    match (
        words.next(),
        words.next().and_then(|n| n.parse::<i32>().ok()),
    ) {
        (Some("exit"), Some(code)) => return (Some(code), None),
        (Some("signal"), Some(signal)) => return (None, Some(signal)),
        _ => {}
    }
    match waited {
        Some(WaitStatus::Exited(_, code)) => (Some(code), None),
        Some(WaitStatus::Signaled(_, signal, _)) => (None, Some(signal as i32)),
        _ => (None, None),
    }
}

/// Supervises `running` until it has exited; returns the runner's exit code (the program's, or
/// 128 + its signal).
pub async fn supervise(
    mut running: Running,
    spec: &LaunchSpec,
    sink: &mut Sink,
    stop: Arc<Notify>,
) -> i32 {
    let launch_mode = matches!(sink, Sink::Control { .. });
    let (events_tx, mut events) = mpsc::unbounded_channel::<Event>();
    let output = Arc::new(Output {
        bytes: AtomicU64::new(0),
        cap: spec.limits.output_bytes,
        exceeded: Notify::new(),
    });
    let mut relays = Vec::new();
    if let Some(stdout) = running.stdout.take() {
        let to = launch_mode.then(own_stdout);
        relays.push(tokio::spawn(relay(
            stdout,
            "stdout",
            to,
            events_tx.clone(),
            output.clone(),
        )));
    }
    {
        let stderr = running.stderr.try_clone();
        if let Ok(stderr) = stderr {
            let to: Option<Box<dyn AsyncWrite + Unpin + Send>> =
                launch_mode.then(|| Box::new(tokio::io::stderr()) as _);
            relays.push(tokio::spawn(relay(
                stderr,
                "stderr",
                to,
                events_tx.clone(),
                output.clone(),
            )));
        }
    }
    // The runner's copy must close, or the relay never sees EOF.
    let placeholder = match std::fs::File::open("/dev/null") {
        Ok(f) => OwnedFd::from(f),
        Err(_) => return 125,
    };
    drop(std::mem::replace(&mut running.stderr, placeholder));
    if let Some(channel) = running.proxy.take() {
        match receive_listener(&channel) {
            Ok(listener) => {
                let allow = Arc::new(spec.allow_net.clone());
                tokio::spawn(crate::proxy::serve(listener, allow, events_tx.clone()));
            }
            Err(e) => eprintln!("sandbox-runner: the proxy is unavailable: {e}"),
        }
    }
    if let Some(listener) = running.egress.take() {
        let listener = listener
            .set_nonblocking(true)
            .and_then(|()| tokio::net::UnixListener::from_std(listener));
        match listener {
            Ok(listener) => {
                let allow = Arc::new(spec.allow_net.clone());
                tokio::spawn(crate::proxy::serve(listener, allow, events_tx.clone()));
            }
            Err(e) => eprintln!("sandbox-runner: the proxy is unavailable: {e}"),
        }
    }
    drop(events_tx);

    sink.emit(Event::Started {
        tier_requested: running.tier_requested,
        tier: running.tier,
        pid: running.pid.as_raw() as u32,
        command: running.command.display().to_string(),
        start_us: running.start_us,
        isolation: running.isolation.clone(),
    })
    .await;

    let pid = running.pid;
    let mut waiter = tokio::task::spawn_blocking(move || waitpid(pid, None).ok());
    let grace = Duration::from_millis(spec.limits.kill_grace_ms.unwrap_or(DEFAULT_GRACE_MS));
    let started = Instant::from_std(running.started);
    let wall_deadline = spec
        .limits
        .wall_secs
        .map(|secs| started + Duration::from_secs_f64(secs));
    let cpu_limit_us = spec
        .limits
        .cpu_seconds
        .filter(|_| {
            running.cgroups.cpu_time && matches!(running.tier, Tier::Namespaces | Tier::Gvisor)
        })
        .map(|s| (s * 1e6) as u64);
    let mut cpu_poll = tokio::time::interval(CPU_POLL);
    let mut kill_at: Option<Instant> = None;
    let mut terminating = false;
    let mut signals = Signals::new();
    let waited = loop {
        tokio::select! {
            waited = &mut waiter => break waited.ok().flatten(),
            Some(event) = events.recv() => sink.emit(event).await,
            _ = sleep_until(wall_deadline), if !terminating => {
                let after_ms = started.elapsed().as_millis() as u64;
                sink.emit(Event::TimedOut { after_ms }).await;
                terminating = true;
                kill_at = Some(terminate(&running, grace));
            }
            _ = cpu_poll.tick(), if cpu_limit_us.is_some() && !terminating => {
                let used = running.cgroups.cpu_usage_us().unwrap_or(0);
                if cpu_limit_us.is_some_and(|limit| used >= limit) {
                    sink.emit(Event::LimitHit {
                        limit: LimitKind::Cpu,
                        detail: format!("{} ms of CPU time used; the limit is {} s", used / 1_000, spec.limits.cpu_seconds.unwrap_or_default()),
                    }).await;
                    terminating = true;
                    kill_now(&running);
                }
            }
            _ = output.exceeded.notified(), if !terminating => {
                sink.emit(Event::LimitHit {
                    limit: LimitKind::Output,
                    detail: format!("more than {} bytes of output", output.cap.unwrap_or_default()),
                }).await;
                terminating = true;
                kill_now(&running);
            }
            _ = sleep_until(kill_at) => {
                kill_now(&running);
                kill_at = None;
            }
            _ = stop.notified(), if !terminating => {
                terminating = true;
                kill_at = Some(terminate(&running, grace));
            }
            _ = signals.recv(), if !terminating => {
                terminating = true;
                kill_at = Some(terminate(&running, grace));
            }
        }
    };
    let wall_ms = started.elapsed().as_millis() as u64;
    if matches!(running.tier, Tier::Process | Tier::Gvisor) {
        // Whatever the program left in its process group goes with it.
        let _ = killpg(pid, Signal::SIGKILL);
    }
    running.cgroups.kill_all();
    // The relays end at EOF, once the last process holding the pipes is gone.
    for relay in relays {
        let _ = tokio::time::timeout(Duration::from_secs(2), relay).await;
    }
    while let Ok(event) = events.try_recv() {
        sink.emit(event).await;
    }
    let status_line = running
        .status
        .take()
        .map(|fd| {
            let mut line = String::new();
            let _ = std::io::Read::read_to_string(&mut std::fs::File::from(fd), &mut line);
            line
        })
        .unwrap_or_default();
    let (code, signal) = program_status(&status_line, waited);
    for event in limit_events(&running, spec, signal) {
        sink.emit(event).await;
    }
    let usage = usage(&running, wall_ms, output.bytes.load(Ordering::Relaxed));
    sink.emit(Event::Exited {
        code,
        signal: signal.map(signal_name),
        usage,
    })
    .await;
    sink.drain().await;
    match (code, signal) {
        (Some(code), _) => code,
        (None, Some(signal)) => 128 + signal,
        _ => 125,
    }
}

fn limit_events(running: &Running, spec: &LaunchSpec, signal: Option<i32>) -> Vec<Event> {
    let mut events = Vec::new();
    let oom = running.cgroups.oom_kills();
    if oom > 0 {
        events.push(Event::LimitHit {
            limit: LimitKind::Memory,
            detail: format!(
                "OOM kill: {oom} process(es) killed at the memory limit of {} bytes",
                spec.limits.memory_bytes.unwrap_or_default()
            ),
        });
    }
    let refused = running.cgroups.pids_refused();
    if refused > 0 {
        events.push(Event::LimitHit {
            limit: LimitKind::Pids,
            detail: format!(
                "{refused} fork(s) refused at the limit of {} processes",
                spec.limits.pids.unwrap_or_default()
            ),
        });
    }
    if signal == Some(libc::SIGXCPU) {
        events.push(Event::LimitHit {
            limit: LimitKind::Cpu,
            detail: format!(
                "killed by SIGXCPU at the CPU limit of {} s",
                spec.limits.cpu_seconds.unwrap_or_default()
            ),
        });
    }
    events
}

fn usage(running: &Running, wall_ms: u64, output_bytes: u64) -> Usage {
    let children = getrusage(UsageWho::RUSAGE_CHILDREN).ok();
    let ms =
        |tv: nix::sys::time::TimeVal| (tv.tv_sec() as u64) * 1_000 + (tv.tv_usec() as u64) / 1_000;
    let (cpu_user_ms, cpu_system_ms) = match running.cgroups.cpu_split_us() {
        Some((user, system)) => (user / 1_000, system / 1_000),
        None => children
            .as_ref()
            .map_or((0, 0), |u| (ms(u.user_time()), ms(u.system_time()))),
    };
    Usage {
        wall_ms,
        cpu_user_ms,
        cpu_system_ms,
        peak_memory_bytes: running
            .cgroups
            .peak_memory()
            .or_else(|| children.as_ref().map(|u| (u.max_rss() as u64) * 1024)),
        output_bytes,
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// Asks the program to end: SIGTERM (the init forwards it), SIGKILL after the grace period.
fn terminate(running: &Running, grace: Duration) -> Instant {
    match running.tier {
        Tier::Process | Tier::Gvisor => {
            let _ = killpg(running.pid, Signal::SIGTERM);
        }
        _ => {
            let _ = kill(running.pid, Signal::SIGTERM);
        }
    }
    Instant::now() + grace
}

/// Ends the sandbox now: killing the init ends its pid namespace, and every process in it.
fn kill_now(running: &Running) {
    match running.tier {
        Tier::Process | Tier::Gvisor => {
            let _ = killpg(running.pid, Signal::SIGKILL);
        }
        _ => {
            let _ = kill(running.pid, Signal::SIGKILL);
        }
    }
    running.cgroups.kill_all();
}

/// SIGTERM, SIGINT and SIGHUP to the runner: stop the sandbox gracefully.
struct Signals {
    term: Option<tokio::signal::unix::Signal>,
    int: Option<tokio::signal::unix::Signal>,
    hup: Option<tokio::signal::unix::Signal>,
}

impl Signals {
    fn new() -> Self {
        use tokio::signal::unix::{SignalKind, signal};
        Signals {
            term: signal(SignalKind::terminate()).ok(),
            int: signal(SignalKind::interrupt()).ok(),
            hup: signal(SignalKind::hangup()).ok(),
        }
    }

    async fn recv(&mut self) {
        async fn one(signal: &mut Option<tokio::signal::unix::Signal>) {
            match signal {
                Some(signal) => {
                    signal.recv().await;
                }
                None => std::future::pending().await,
            }
        }
        tokio::select! {
            _ = one(&mut self.term) => {}
            _ = one(&mut self.int) => {}
            _ = one(&mut self.hup) => {}
        }
    }
}

/// Receives the proxy's listening socket from the sandbox's init.
fn receive_listener(channel: &OwnedFd) -> Result<tokio::net::TcpListener, String> {
    use std::os::fd::{AsRawFd, FromRawFd};
    let mut byte = [0u8; 1];
    let mut iov = [std::io::IoSliceMut::new(&mut byte)];
    let mut space = nix::cmsg_space!([std::os::fd::RawFd; 1]);
    let message = nix::sys::socket::recvmsg::<()>(
        channel.as_raw_fd(),
        &mut iov,
        Some(&mut space),
        nix::sys::socket::MsgFlags::MSG_CMSG_CLOEXEC,
    )
    .map_err(|e| e.to_string())?;
    for cmsg in message.cmsgs().map_err(|e| e.to_string())? {
        if let nix::sys::socket::ControlMessageOwned::ScmRights(fds) = cmsg
            && let Some(&fd) = fds.first()
        {
            // SAFETY: the kernel just installed this descriptor for us; nothing else owns it.
            let listener = unsafe { std::net::TcpListener::from_raw_fd(fd) };
            listener.set_nonblocking(true).map_err(|e| e.to_string())?;
            return tokio::net::TcpListener::from_std(listener).map_err(|e| e.to_string());
        }
    }
    Err("the sandbox sent no listener".into())
}
