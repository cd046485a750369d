//! `egress-shim`: the first process of a `gvisor` sandbox whose spec allows network endpoints.
//!
//! gVisor's sandbox has no network (`--network=none`), and a listening socket cannot be handed
//! out of it, so the runner serves its egress proxy on a host Unix socket that runsc lets the
//! sandbox connect to. Inside, this shim listens where the namespaces tier's proxy listens
//! (`127.0.0.1:3128`, which `HTTP_PROXY` names), copies each connection to that socket and back,
//! runs the server with the same standard streams and environment, reaps every orphan (it is
//! PID 1), and exits as the server did. The allow-list is enforced by the proxy outside; the
//! shim decides nothing.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::Command;

use nix::sys::wait::{WaitStatus, waitpid};
use nix::unistd::Pid;

/// Runs `command` behind the forwarder; returns the exit code to exit with.
pub(crate) fn run(listen: &str, socket: &Path, command: &[String]) -> i32 {
    let Some((program, args)) = command.split_first() else {
        eprintln!("egress-shim: no command");
        return 2;
    };
    let listener = match TcpListener::bind(listen) {
        Ok(listener) => listener,
        Err(e) => {
            eprintln!("egress-shim: cannot listen on {listen}: {e}");
            return 125;
        }
    };
    let socket = socket.to_path_buf();
    std::thread::spawn(move || {
        for client in listener.incoming().flatten() {
            let socket = socket.clone();
            std::thread::spawn(move || forward(client, &socket));
        }
    });
    let child = match Command::new(program).args(args).spawn() {
        Ok(child) => child,
        Err(e) => {
            eprintln!("egress-shim: cannot run {program}: {e}");
            return 127;
        }
    };
    let server = Pid::from_raw(child.id() as i32);
    // As PID 1, every orphan of the sandbox is ours to reap; the server's end is the shim's.
    loop {
        match waitpid(None, None) {
            Ok(WaitStatus::Exited(pid, code)) if pid == server => return code,
            Ok(WaitStatus::Signaled(pid, signal, _)) if pid == server => {
                return 128 + signal as i32;
            }
            Ok(_) => {}
            Err(nix::errno::Errno::EINTR) => {}
            Err(e) => {
                eprintln!("egress-shim: waiting for the server: {e}");
                return 125;
            }
        }
    }
}

/// Copies one connection to the proxy's socket and back until both sides are done.
fn forward(client: TcpStream, socket: &PathBuf) {
    let Ok(upstream) = UnixStream::connect(socket) else {
        let _ = (&client).write_all(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n");
        return;
    };
    let (Ok(client_in), Ok(upstream_out)) = (client.try_clone(), upstream.try_clone()) else {
        return;
    };
    let outbound = std::thread::spawn(move || {
        copy(client_in, &upstream_out);
        let _ = upstream_out.shutdown(Shutdown::Write);
    });
    copy(&upstream, &client);
    let _ = client.shutdown(Shutdown::Write);
    let _ = outbound.join();
}

fn copy(mut from: impl Read, mut to: impl Write) {
    let mut buf = [0u8; 16 * 1024];
    loop {
        match from.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                if to.write_all(&buf[..n]).is_err() {
                    return;
                }
            }
        }
    }
}
