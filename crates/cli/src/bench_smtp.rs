//! `engager bench smtp`: messages per second through the SMTP channel to a real SMTP server,
//! and the CPU time our process spends per message (getrusage of the whole process, all
//! threads, before and after N sends), without DKIM and with Ed25519 and RSA-2048 signing.
//! The baseline beside each figure is building and signing the same messages without sending.
//!
//! By default it starts the aiosmtpd sink (`crates/channels/tests/support/smtp_sink.py`) on a
//! free loopback port in discard mode; `--host`/`--port` measure another server instead.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use chrono::{DateTime, Utc};
use clap::Args;
use engager_channels::dkim::{generate_private_key_pem, DkimAlgorithm, DkimConfig};
use engager_channels::smtp::{SmtpChannel, SmtpConfig};
use engager_channels::{ChannelSender, OutgoingMessage, Security, Sender, Unsubscribe};
use engager_domain::{Channel, DeliveryId, EmailAddress, LeadId};
use serde_json::json;

use crate::output::{print_json, table};

const SINK: &str = include_str!("../../channels/tests/support/smtp_sink.py");

/// `engager bench smtp`
#[derive(Debug, Args)]
pub struct SmtpBenchArgs {
    /// Messages per measurement.
    #[arg(long, default_value_t = 3_000)]
    pub messages: usize,
    /// Messages in flight at once (also the pool size).
    #[arg(long, default_value_t = 4)]
    pub concurrency: usize,
    /// DKIM modes to measure, comma-separated: none, ed25519, rsa.
    #[arg(long, value_delimiter = ',', default_value = "none,ed25519,rsa")]
    pub dkim: Vec<String>,
    /// Measure this SMTP server (plain text, no AUTH) instead of starting the local sink.
    #[arg(long, requires = "port")]
    pub host: Option<String>,
    /// Its port.
    #[arg(long, requires = "host")]
    pub port: Option<u16>,
}

/// The sink process, stopped when dropped.
struct Sink(Child);

impl Drop for Sink {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_sink(dir: &std::path::Path) -> Result<(Sink, u16)> {
    let script = dir.join("smtp_sink.py");
    std::fs::write(&script, SINK)?;
    let python = std::env::var("ENGAGER_PYTHON").unwrap_or_else(|_| "python3".into());
    let mut child = Command::new(&python)
        .arg(&script)
        .args([
            "--host",
            "127.0.0.1",
            "--port",
            "0",
            "--discard",
            "--exit-on-stdin-eof",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .with_context(|| {
            format!("starting the SMTP sink with {python} (needs `pip install aiosmtpd`)")
        })?;
    let stdout = child
        .stdout
        .take()
        .ok_or_else(|| anyhow!("no sink stdout"))?;
    let sink = Sink(child);
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line)?;
    let port = line
        .trim()
        .strip_prefix("READY ")
        .and_then(|p| p.parse().ok())
        .ok_or_else(|| {
            anyhow!("the SMTP sink did not start (is aiosmtpd installed? `pip install aiosmtpd`)")
        })?;
    Ok((sink, port))
}

fn message(i: usize) -> OutgoingMessage {
    let id = DeliveryId(i64::try_from(i).unwrap_or(i64::MAX));
    let body = format!(
        "Hi Ada,\n\nTeams in logistics like Company {i} Inc. use us to forecast demand two \
         quarters out. Would a 20-minute call next week be useful?\n\n{}\nMaya Chen\nAcme \
         Analytics Inc., 548 Market St #12345, San Francisco, CA 94104, USA\n\
         Unsubscribe: https://engager.acme-analytics.example/u/TOKEN{i}\n",
        "We cut forecast error by a third for teams like yours. ".repeat(8)
    );
    OutgoingMessage {
        delivery_id: id,
        lead_id: LeadId(1),
        campaign: "bench".into(),
        step_index: 0,
        channel: Channel::Email,
        to: format!("lead{i}@company{}.example", i % 7919),
        to_name: Some("Ada Tester".into()),
        subject: Some(format!("Ada, a question about Company {i}")),
        body_html: Some(format!("<p>{}</p>", body.replace('\n', "<br>"))),
        body_text: body,
        date: DateTime::parse_from_rfc3339("2026-03-03T15:00:00Z")
            .map(|d| d.with_timezone(&Utc))
            .unwrap_or_default(),
        message_id: engager_channels::email::message_id(id, "bench", "acme-analytics.example"),
        sender: Sender {
            name: "Maya Chen".into(),
            email: EmailAddress::parse("maya@acme-analytics.example").expect("a valid address"),
            postal_address: "548 Market St #12345, San Francisco, CA 94104, USA".into(),
            sms_from: None,
        },
        unsubscribe: Some(Unsubscribe {
            url: format!("https://engager.acme-analytics.example/u/TOKEN{i}"),
            mailto: Some("mailto:unsubscribe@acme-analytics.example".into()),
        }),
        due_by: None,
    }
}

/// CPU time of this process (all threads): user and system.
#[derive(Debug, Clone, Copy)]
struct Cpu {
    user: Duration,
    system: Duration,
}

impl Cpu {
    fn now() -> Result<Cpu> {
        use nix::sys::resource::{getrusage, UsageWho};
        use nix::sys::time::TimeValLike;
        let usage = getrusage(UsageWho::RUSAGE_SELF)?;
        let micros = |t: nix::sys::time::TimeVal| {
            Duration::from_micros(u64::try_from(t.num_microseconds()).unwrap_or(0))
        };
        Ok(Cpu {
            user: micros(usage.user_time()),
            system: micros(usage.system_time()),
        })
    }

    fn since(self, start: Cpu) -> Cpu {
        Cpu {
            user: self.user.saturating_sub(start.user),
            system: self.system.saturating_sub(start.system),
        }
    }

    fn total(self) -> Duration {
        self.user + self.system
    }

    /// Microseconds per message: total, user, system.
    fn per_message(self, messages: usize) -> (f64, f64, f64) {
        let n = messages.max(1) as f64;
        (
            self.total().as_secs_f64() * 1e6 / n,
            self.user.as_secs_f64() * 1e6 / n,
            self.system.as_secs_f64() * 1e6 / n,
        )
    }
}

struct Measured {
    dkim: &'static str,
    sent: usize,
    seconds: f64,
    cpu: Cpu,
    render_cpu: Cpu,
}

async fn measure(
    channel: &SmtpChannel,
    dkim: &'static str,
    messages: usize,
    concurrency: usize,
) -> Result<Measured> {
    let prepared: Vec<OutgoingMessage> = (0..messages).map(message).collect();
    // Build and sign every message without sending, for the share of the CPU time it takes.
    let start = Cpu::now()?;
    for m in &prepared {
        std::hint::black_box(channel.render(m)?);
    }
    let render_cpu = Cpu::now()?.since(start);

    // Warm-up: open the pool's connections.
    for m in prepared.iter().take(concurrency * 4) {
        channel.send(m).await?;
    }
    let prepared = Arc::new(prepared);
    let next = Arc::new(AtomicUsize::new(0));
    let start = Cpu::now()?;
    let started = Instant::now();
    let workers: Vec<_> = (0..concurrency)
        .map(|_| {
            let channel = channel.clone();
            let prepared = Arc::clone(&prepared);
            let next = Arc::clone(&next);
            tokio::spawn(async move {
                let mut sent = 0usize;
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(m) = prepared.get(i) else {
                        return Ok::<_, anyhow::Error>(sent);
                    };
                    channel.send(m).await?;
                    sent += 1;
                }
            })
        })
        .collect();
    let mut sent = 0;
    for worker in workers {
        sent += worker.await??;
    }
    let seconds = started.elapsed().as_secs_f64();
    Ok(Measured {
        dkim,
        sent,
        seconds,
        cpu: Cpu::now()?.since(start),
        render_cpu,
    })
}

/// The baseline: the same SMTP conversation (MAIL, RCPT, DATA — pipelined when the server
/// offers it, as the channel does — then the message) over plain tokio sockets with messages
/// rendered beforehand: the floor set by the kernel, the runtime and the server.
async fn raw_baseline(
    host: &str,
    port: u16,
    bodies: Arc<Vec<(String, String, Vec<u8>)>>,
    concurrency: usize,
) -> Result<(f64, Cpu)> {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

    /// Reads one reply; returns its code, and whether one of its lines is `keyword`.
    async fn reply<R: tokio::io::AsyncBufRead + Unpin>(
        reader: &mut R,
        line: &mut String,
        keyword: &str,
    ) -> Result<(u16, bool)> {
        let mut found = false;
        loop {
            line.clear();
            if reader.read_line(line).await? == 0 {
                bail!("the server closed the connection");
            }
            found |= line
                .get(4..)
                .is_some_and(|rest| rest.trim().eq_ignore_ascii_case(keyword));
            // Multi-line replies continue with "NNN-".
            if line.as_bytes().get(3) != Some(&b'-') {
                let code = line
                    .get(..3)
                    .and_then(|c| c.parse().ok())
                    .ok_or_else(|| anyhow!("bad reply {line:?}"))?;
                return Ok((code, found));
            }
        }
    }

    let mut connections = Vec::new();
    for _ in 0..concurrency {
        let stream = tokio::net::TcpStream::connect((host, port)).await?;
        stream.set_nodelay(true)?;
        let (read, mut write) = stream.into_split();
        let mut reader = BufReader::new(read);
        let mut line = String::new();
        reply(&mut reader, &mut line, "").await?;
        write.write_all(b"EHLO bench.engager.test\r\n").await?;
        let (_, pipelining) = reply(&mut reader, &mut line, "PIPELINING").await?;
        connections.push((reader, write, pipelining));
    }
    let next = Arc::new(AtomicUsize::new(0));
    let start = Cpu::now()?;
    let started = Instant::now();
    let workers: Vec<_> = connections
        .into_iter()
        .map(|(mut reader, mut write, pipelining)| {
            let bodies = Arc::clone(&bodies);
            let next = Arc::clone(&next);
            tokio::spawn(async move {
                let mut line = String::new();
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some((from, to, body)) = bodies.get(i) else {
                        return Ok::<_, anyhow::Error>(());
                    };
                    let commands = [
                        (format!("MAIL FROM:<{from}>\r\n"), 250),
                        (format!("RCPT TO:<{to}>\r\n"), 250),
                        ("DATA\r\n".to_owned(), 354),
                    ];
                    if pipelining {
                        let batch: String = commands.iter().map(|(c, _)| c.as_str()).collect();
                        write.write_all(batch.as_bytes()).await?;
                    }
                    for (command, expect) in &commands {
                        if !pipelining {
                            write.write_all(command.as_bytes()).await?;
                        }
                        if reply(&mut reader, &mut line, "").await?.0 != *expect {
                            bail!("{command:?} answered {line:?}");
                        }
                    }
                    write.write_all(body).await?;
                    if reply(&mut reader, &mut line, "").await?.0 != 250 {
                        bail!("message refused: {line:?}");
                    }
                }
            })
        })
        .collect();
    for worker in workers {
        worker.await??;
    }
    Ok((started.elapsed().as_secs_f64(), Cpu::now()?.since(start)))
}

/// A rendered message as the raw baseline sends it: dot-stuffed, with the final ".".
fn wire_body(channel: &SmtpChannel, m: &OutgoingMessage) -> Result<(String, String, Vec<u8>)> {
    let (envelope, bytes) = channel.render(m)?;
    let text = String::from_utf8(bytes)?;
    let mut body = String::with_capacity(text.len() + 8);
    for line in text.split_inclusive("\r\n") {
        if line.starts_with('.') {
            body.push('.');
        }
        body.push_str(line);
    }
    if !body.ends_with("\r\n") {
        body.push_str("\r\n");
    }
    body.push_str(".\r\n");
    let from = envelope.from().map(|a| a.to_string()).unwrap_or_default();
    let to = envelope
        .to()
        .first()
        .map(|a| a.to_string())
        .unwrap_or_default();
    Ok((from, to, body.into_bytes()))
}

/// Runs the SMTP benchmark.
pub async fn run(args: SmtpBenchArgs, json: bool) -> Result<ExitCode> {
    if args.messages == 0 || args.concurrency == 0 {
        bail!("--messages and --concurrency must be at least 1");
    }
    let dir = tempfile::tempdir()?;
    let (_sink, host, port) = match (&args.host, args.port) {
        (Some(host), Some(port)) => (None, host.clone(), port),
        _ => {
            let (sink, port) = start_sink(dir.path())?;
            (Some(sink), "127.0.0.1".to_owned(), port)
        }
    };
    let mut results = Vec::new();
    let mut baseline: Option<(f64, Cpu)> = None;
    for mode in &args.dkim {
        let (label, algorithm) = match mode.as_str() {
            "none" => ("none", None),
            "ed25519" => ("ed25519", Some(DkimAlgorithm::Ed25519)),
            "rsa" => ("rsa-2048", Some(DkimAlgorithm::Rsa)),
            other => bail!("--dkim: unknown mode {other:?} (expected none, ed25519 or rsa)"),
        };
        let dkim = match algorithm {
            None => None,
            Some(algorithm) => {
                let path = dir.path().join(format!("{label}.pem"));
                std::fs::write(
                    &path,
                    generate_private_key_pem(algorithm).map_err(|e| anyhow!(e))?,
                )?;
                Some(DkimConfig {
                    domain: "acme-analytics.example".into(),
                    selector: "bench".into(),
                    private_key_path: path,
                })
            }
        };
        let config = SmtpConfig {
            host: host.clone(),
            port: Some(port),
            security: Security::None,
            username: None,
            password: None,
            envelope_from: None,
            hello_name: Some("bench.engager.test".into()),
            pool_size: args.concurrency,
            connect_timeout_seconds: 10.0,
            command_timeout_seconds: 30.0,
            data_timeout_seconds: 30.0,
            idle_timeout_seconds: 30.0,
            ca_certificate_path: None,
            dkim,
        };
        let channel = SmtpChannel::new(&config).map_err(|e| anyhow!("{e}"))?;
        channel
            .health_check()
            .await
            .map_err(|e| anyhow!("SMTP server {host}:{port}: {e}"))?;
        eprintln!("Sending {} messages (DKIM: {label})…", args.messages);
        results.push(measure(&channel, label, args.messages, args.concurrency).await?);
        if baseline.is_none() {
            let bodies: Vec<_> = (0..args.messages)
                .map(|i| wire_body(&channel, &message(i)))
                .collect::<Result<_>>()?;
            eprintln!("Baseline: the same conversation over bare sockets…");
            baseline = Some(raw_baseline(&host, port, Arc::new(bodies), args.concurrency).await?);
        }
    }
    let (raw_seconds, raw_cpu) = baseline.ok_or_else(|| anyhow!("no measurement"))?;
    let (raw_total, raw_user, raw_system) = raw_cpu.per_message(args.messages);
    if json {
        print_json(&json!({
            "server": format!("{host}:{port}"),
            "concurrency": args.concurrency,
            "runs": results.iter().map(|r| {
                let (total, user, system) = r.cpu.per_message(r.sent);
                json!({
                    "dkim": r.dkim, "messages": r.sent, "seconds": r.seconds,
                    "messages_per_second": r.sent as f64 / r.seconds,
                    "cpu_us_per_message": total, "user_us_per_message": user, "system_us_per_message": system,
                    "build_and_sign_cpu_us_per_message": r.render_cpu.per_message(r.sent).0,
                })
            }).collect::<Vec<_>>(),
            "baseline_bare_sockets": {
                "messages_per_second": args.messages as f64 / raw_seconds,
                "cpu_us_per_message": raw_total, "user_us_per_message": raw_user, "system_us_per_message": raw_system,
            },
        }));
    } else {
        let mut t = table(&[
            "Sender",
            "Messages/s",
            "CPU µs per message (user + system)",
            "of which build + sign",
        ]);
        for r in &results {
            let (total, user, system) = r.cpu.per_message(r.sent);
            t.add_row(vec![
                format!("SMTP channel, DKIM {}", r.dkim),
                format!("{:.0}", r.sent as f64 / r.seconds),
                format!("{total:.0} ({user:.0} + {system:.0})"),
                format!("{:.0}", r.render_cpu.per_message(r.sent).0),
            ]);
        }
        t.add_row(vec![
            "baseline: bare sockets, pre-rendered".to_owned(),
            format!("{:.0}", args.messages as f64 / raw_seconds),
            format!("{raw_total:.0} ({raw_user:.0} + {raw_system:.0})"),
            "0".to_owned(),
        ]);
        println!(
            "SMTP to {host}:{port}, {} messages per run, {} in flight",
            args.messages, args.concurrency
        );
        println!("{t}");
    }
    Ok(ExitCode::SUCCESS)
}
