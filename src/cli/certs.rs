//! `warden certs init|issue`: the cluster CA and node certificates for node-to-node sync
//! (mutual TLS over QUIC). The files and the rules are `warden::sync::certs`'.

use std::path::PathBuf;

use warden::sync::certs::{self, NodeName};

#[derive(clap::Subcommand, Debug)]
pub enum CertsCommand {
    /// Make a new cluster CA: DIR/ca.pem and DIR/ca.key.
    ///
    /// Every node trusts ca.pem. ca.key (mode 0600) signs node certificates: whoever holds it
    /// can add nodes to the cluster, so keep it off the nodes. DIR is created with mode 0700 if missing. Nothing is overwritten: if DIR already has a
    /// CA, this fails. The CA is valid for ten years.
    Init {
        /// Where to put the CA.
        #[arg(long, default_value = "certs")]
        dir: PathBuf,
    },
    /// Make node NODE's certificate and key, DIR/NODE.pem and DIR/NODE.key, signed by the CA in DIR.
    ///
    /// The key has mode 0600. NODE is the node's name in the cluster: 1 to 63 characters of a-z, 0-9 and '-', not
    /// starting with '-'. Copy ca.pem, NODE.pem and NODE.key to that node. Nothing is
    /// overwritten. Valid for one year; to renew, move the old pair aside, issue again and
    /// restart the node.
    Issue {
        /// The node's name.
        node: String,
        /// Where the CA is (and the node's files go).
        #[arg(long, default_value = "certs")]
        dir: PathBuf,
    },
}

/// Runs one `warden certs` command.
pub fn run(command: CertsCommand) -> anyhow::Result<()> {
    match command {
        CertsCommand::Init { dir } => {
            let made = certs::init(&dir)?;
            println!(
                "cluster CA: {} (key: {}, keep it safe)",
                made.cert.display(),
                made.key.display()
            );
            println!("next: warden certs issue NODE --dir {}", dir.display());
        }
        CertsCommand::Issue { node, dir } => {
            let name = NodeName::new(&node)?;
            let made = certs::issue(&dir, &name)?;
            println!(
                "node `{name}`: {} (key: {})",
                made.cert.display(),
                made.key.display()
            );
        }
    }
    Ok(())
}
