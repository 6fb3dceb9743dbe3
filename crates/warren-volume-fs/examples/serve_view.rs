//! Serves the view of a directory by hand: `serve_view SOURCE MOUNTPOINT` (as root).
fn main() -> std::process::ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let [_, source, mountpoint] = args.as_slice() else {
        eprintln!("usage: serve_view SOURCE MOUNTPOINT");
        return std::process::ExitCode::from(2);
    };
    match warren_volume_fs::serve(source.as_ref(), mountpoint.as_ref()) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("serve_view: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
