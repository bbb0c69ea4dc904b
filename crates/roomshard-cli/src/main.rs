//! `roomshard`: the command line for verified exit.
//!
//! Every command works on a *home* (`--home DIR`): the embedded default server in one directory
//! (SQLite, a local media directory, a local key directory) holding rooms of the reference Mesh
//! schema. `roomshard demo --dir D` runs the whole story in a fresh directory.
//!
//! Exit codes (stable, for scripts):
//! - `0` the command succeeded (for `verify`: the archive is valid);
//! - `1` the operation ran and failed or was refused: an invalid bundle or receipt, a sealed room,
//!   a conflicting placement, a broken audit chain, a provider error;
//! - `2` usage error: bad arguments, unreadable input files, a malformed trusted key set, a
//!   directory that is not a home.
//!
//! Errors are one line on stderr starting with `error: `. With `--json`, a command prints one
//! JSON object on stdout (progress bars, shown only on a terminal, go to stderr).

#![forbid(unsafe_code)]

/// `println!` that ignores a closed stdout (`roomshard rooms | head` must not panic).
macro_rules! outln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($arg)*);
    }};
}

mod commands;
mod progress;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use commands::CliError;

/// The exit-code table shown under every `--help`.
const EXIT_CODES: &str = "\
Exit codes:
  0  success (verify: the archive is valid)
  1  the operation failed or was refused (invalid bundle or receipt, sealed room, conflict,
     broken audit chain, provider error); the reason is one `error: ` line on stderr
  2  usage error (bad arguments, unreadable files, malformed key set, not a home)";

#[derive(Parser)]
#[command(
    name = "roomshard",
    version,
    about = "Per-room data sovereignty: verified exit for chat rooms",
    after_help = EXIT_CODES
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the whole story in a fresh directory: seed a room, decentralise it, export it,
    /// verify the export, import it into a second home.
    #[command(after_help = EXIT_CODES)]
    Demo(commands::demo::DemoArgs),
    /// Create a pooled room of generated Mesh data (members, messages, attachments, reactions,
    /// media objects) in a home.
    #[command(after_help = EXIT_CODES)]
    Seed(commands::seed::SeedArgs),
    /// List every room placement of a home.
    #[command(after_help = EXIT_CODES)]
    Rooms(commands::rooms::RoomsArgs),
    /// A room's rows per table, the bytes they take (a PostgreSQL room schema's
    /// `pg_total_relation_size`, a shard file's size) and its media.
    #[command(after_help = EXIT_CODES)]
    Usage(commands::usage::UsageArgs),
    /// Move a pooled room into its own shard, bucket and key (resumes an interrupted run), and
    /// print its Sovereignty Receipt; `--plan` only prints what it would do.
    #[command(after_help = EXIT_CODES)]
    Decentralise(commands::placement::DecentraliseArgs),
    /// Bring a sovereign room back into the shared tables and bucket.
    #[command(after_help = EXIT_CODES)]
    Recentralise(commands::placement::RoomArgs),
    /// Undo an unfinished decentralise (the room stays pooled) or recentralise (it stays
    /// sovereign); `decentralise` / `recentralise` instead resume it.
    #[command(after_help = EXIT_CODES)]
    Abort(commands::placement::RoomArgs),
    /// Export a room as a signed DIR/room_<id>.tar.zst and its Sigstore sidecar.
    #[command(after_help = EXIT_CODES)]
    Export(commands::export::ExportArgs),
    /// Verify a room bundle (room_<id>.tar.zst) against a trusted key set.
    #[command(after_help = EXIT_CODES)]
    Verify(commands::verify::VerifyArgs),
    /// List an archive's manifest and entries without checking who signed it (UNVERIFIED).
    #[command(after_help = EXIT_CODES)]
    Inspect(commands::verify::InspectArgs),
    /// Verify a bundle, then import it into a home under a new room id (all or nothing).
    #[command(after_help = EXIT_CODES)]
    Import(commands::import::ImportArgs),
    /// Sovereignty Receipts: verify one, or list a room's.
    #[command(after_help = EXIT_CODES)]
    Receipt {
        #[command(subcommand)]
        command: commands::receipt::ReceiptCommand,
    },
    /// Revoke this server's grant on a sovereign room's key: the room is sealed.
    #[command(after_help = EXIT_CODES)]
    Revoke(commands::placement::RoomArgs),
    /// Restore this server's grant on a sealed room's key, and issue a new receipt.
    #[command(after_help = EXIT_CODES)]
    Regrant(commands::placement::RoomArgs),
    /// Rotate a sovereign room's key, and issue a new receipt.
    #[command(after_help = EXIT_CODES)]
    Rotate(commands::placement::RoomArgs),
    /// The hash-chained audit log: verify it, or list it.
    #[command(after_help = EXIT_CODES)]
    Audit {
        #[command(subcommand)]
        command: commands::audit::AuditCommand,
    },
    /// Mesh-Lite, a read-only web viewer of a home's rooms.
    #[command(after_help = EXIT_CODES)]
    Lite {
        #[command(subcommand)]
        command: LiteCommand,
    },
    /// Manage signing keys.
    #[command(after_help = EXIT_CODES)]
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
}

#[derive(Subcommand)]
enum KeysCommand {
    /// Generate a signing key pair: private.pem (PKCS#8, mode 0600), public.pem (SPKI) and
    /// trusted-keys.json holding the public key.
    #[command(after_help = EXIT_CODES)]
    Generate(commands::keys::GenerateArgs),
}

#[derive(Subcommand)]
enum LiteCommand {
    /// Serve Mesh-Lite for a home until Ctrl-C.
    #[command(after_help = EXIT_CODES)]
    Serve(LiteServeArgs),
}

#[derive(clap::Args)]
struct LiteServeArgs {
    /// The home, and where its providers live.
    #[command(flatten)]
    home: commands::HomeArgs,
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8080")]
    addr: std::net::SocketAddr,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli.command) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {}", e.message());
            e.exit_code()
        }
    }
}

fn run(command: Command) -> Result<ExitCode, CliError> {
    use commands::*;
    match command {
        Command::Demo(args) => demo::run(&args),
        Command::Seed(args) => seed::run(&args),
        Command::Rooms(args) => rooms::run(&args),
        Command::Usage(args) => usage::run(&args),
        Command::Decentralise(args) => placement::decentralise(&args),
        Command::Recentralise(args) => placement::recentralise(&args),
        Command::Abort(args) => placement::abort(&args),
        Command::Export(args) => export::run(&args),
        Command::Verify(args) => verify::run(&args),
        Command::Inspect(args) => verify::inspect(&args),
        Command::Import(args) => import::run(&args),
        Command::Receipt { command } => receipt::run(command),
        Command::Revoke(args) => placement::revoke(&args),
        Command::Regrant(args) => placement::regrant(&args),
        Command::Rotate(args) => placement::rotate(&args),
        Command::Audit { command } => audit::run(command),
        Command::Lite {
            command: LiteCommand::Serve(args),
        } => block_on(async {
            let home = open_home(&args.home, Create::No, None).await?;
            roomshard_cli::lite::serve(home, args.addr).await?;
            Ok(ExitCode::SUCCESS)
        }),
        Command::Keys {
            command: KeysCommand::Generate(args),
        } => keys::generate(&args).map(|()| ExitCode::SUCCESS),
    }
}
