//! `mock-origin`: a fake LLM provider for end-to-end tests and benchmarks.
//!
//! Speaks the OpenAI (and Azure OpenAI, the Responses API, Groq-style `/openai/v1`,
//! Mistral's strict `/mistral/v1`, Databricks' `/serving-endpoints`), Anthropic Messages,
//! Gemini, Vertex AI (with Google's service-account token endpoint), Bedrock (SigV4-checked
//! Converse, ConverseStream as an AWS event stream, InvokeModel) and STS wire formats with
//! deterministic replies (`echo: <last user text>`), records what it receives, and injects
//! faults on demand. See `control.rs` for the `/_mock/*` control API.
//!
//! ```text
//! mock-origin [--addr 127.0.0.1:0] [--name NAME]
//! ```
//! Prints `listening on HOST:PORT` once bound; exits on SIGINT/SIGTERM.

mod anthropic;
mod aws;
mod body;
mod control;
mod creds;
mod embed;
mod exchange;
mod fault;
mod gemini;
mod google;
mod openai;
mod responses;
mod router;
mod sse;
mod text;

use std::io::{self, Write};
use std::net::SocketAddr;
use std::pin::Pin;
use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};

use control::State;
use router::ConnFlags;

const USAGE: &str = "usage: mock-origin [--addr 127.0.0.1:0] [--name NAME]";

#[derive(Debug, PartialEq)]
struct Args {
    addr: SocketAddr,
    name: String,
}

/// What the command line asks for.
#[derive(Debug, PartialEq)]
enum Command {
    Run(Args),
    Help,
}

fn parse_args(args: impl IntoIterator<Item = String>) -> Result<Command, String> {
    let mut addr = SocketAddr::from(([127, 0, 0, 1], 0));
    let mut name = String::from("mock");
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        let (flag, inline) = match arg.split_once('=') {
            Some((flag, value)) if flag.starts_with("--") => (flag.to_owned(), Some(value.to_owned())),
            _ => (arg, None),
        };
        let mut value = || inline.clone().or_else(|| args.next()).ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--addr" => {
                let raw = value()?;
                addr = raw.parse().map_err(|e| format!("--addr {raw:?}: {e}"))?;
            }
            "--name" => name = value()?,
            "-h" | "--help" => return Ok(Command::Help),
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    Ok(Command::Run(Args { addr, name }))
}

fn main() -> ExitCode {
    let args = match parse_args(std::env::args().skip(1)) {
        Ok(Command::Run(args)) => args,
        Ok(Command::Help) => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(message) => {
            eprintln!("mock-origin: {message}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("mock-origin: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(serve(args));
    // Connections still open (e.g. hanging requests) are simply abandoned.
    runtime.shutdown_background();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mock-origin: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(args: Args) -> io::Result<()> {
    let listener = TcpListener::bind(args.addr).await?;
    let local = listener.local_addr()?;
    {
        let mut stdout = io::stdout().lock();
        writeln!(stdout, "listening on {local}")?;
        stdout.flush()?;
    }
    let state = Arc::new(State::new(args.name));
    let shutdown = shutdown_signal();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    tokio::spawn(serve_connection(stream, Arc::clone(&state)));
                }
                Err(e) => {
                    // Typically EMFILE under heavy load: back off briefly.
                    eprintln!("mock-origin: accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            },
            () = &mut shutdown => return Ok(()),
        }
    }
}

async fn serve_connection(stream: TcpStream, state: Arc<State>) {
    // Small request/response exchanges: do not wait for Nagle.
    let _ = stream.set_nodelay(true);
    let flags = Arc::new(ConnFlags::default());
    let io = TokioIo::new(Conn { stream, flags: Arc::clone(&flags) });
    let service = service_fn(move |request| router::handle(Arc::clone(&state), Arc::clone(&flags), request));
    // Errors here are client disconnects and injected faults; nothing to report.
    let _ = http1::Builder::new().keep_alive(true).serve_connection(io, service).await;
}

/// Resolves on SIGINT or SIGTERM.
async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut terminate) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = terminate.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// A TCP stream that closes with a reset (RST) instead of a FIN when the
/// `reset` fault asked for it.
struct Conn {
    stream: TcpStream,
    flags: Arc<ConnFlags>,
}

impl Drop for Conn {
    fn drop(&mut self) {
        if self.flags.reset.load(Ordering::Relaxed) {
            let _ = self.stream.set_zero_linger();
        }
    }
}

impl AsyncRead for Conn {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Conn {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Command, String> {
        parse_args(args.iter().map(|s| s.to_string()))
    }

    #[test]
    fn defaults() {
        assert_eq!(
            parse(&[]),
            Ok(Command::Run(Args { addr: "127.0.0.1:0".parse().expect("addr"), name: "mock".into() }))
        );
    }

    #[test]
    fn flags_with_separate_or_inline_values() {
        let expected = Command::Run(Args { addr: "127.0.0.1:9000".parse().expect("addr"), name: "primary".into() });
        assert_eq!(parse(&["--addr", "127.0.0.1:9000", "--name", "primary"]), Ok(expected));
        let inline = parse(&["--addr=127.0.0.1:9000", "--name=primary"]);
        assert!(matches!(inline, Ok(Command::Run(ref a)) if a.name == "primary"));
    }

    #[test]
    fn rejects_bad_input() {
        assert!(parse(&["--addr"]).is_err());
        assert!(parse(&["--addr", "nope"]).is_err());
        assert!(parse(&["--bogus"]).is_err());
        assert_eq!(parse(&["--help"]), Ok(Command::Help));
    }
}
