//! TLS through the URL, as libpq's sslmode: against a server that refuses unencrypted logins, with a certificate
//! for 127.0.0.1 signed by a CA made for the test (openssl).

use std::os::unix::fs::PermissionsExt;
use std::process::Command;

use crate::support::{eventually, private_cluster, psql};
use crate::tool::{Scratch, bench};

/// Makes `ca.crt` and a server key and certificate for IP 127.0.0.1 signed by it, in `files`.
fn certificates(files: &Scratch) {
    let openssl = |args: &[&str]| {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(files.path(""))
            .output()
            .unwrap_or_else(|e| panic!("the TLS test needs the openssl command ({e}): apt-get install openssl"));
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];
    openssl(
        &[
            &["req", "-x509"],
            &ec[..],
            &[
                "-keyout",
                "ca.key",
                "-out",
                "ca.crt",
                "-days",
                "2",
                "-subj",
                "/CN=bench test CA",
            ],
        ]
        .concat(),
    );
    openssl(
        &[
            &["req"],
            &ec[..],
            &["-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=127.0.0.1"],
        ]
        .concat(),
    );
    files.write("san.ext", "subjectAltName = IP:127.0.0.1\n");
    openssl(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.crt",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.crt",
        "-days",
        "2",
        "-extfile",
        "san.ext",
    ]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sslmode_encrypts_and_the_verify_modes_check_the_certificate() {
    let c = private_cluster(0);
    let files = Scratch::new("tls");
    certificates(&files);
    let data = &c.leader().data_dir;
    for file in ["server.crt", "server.key"] {
        let to = data.join(file);
        std::fs::copy(files.path(file), &to).expect("copy into the data dir");
        std::fs::set_permissions(&to, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        c.tools().chown(&to).expect("chown to the server's user");
    }
    // Unencrypted logins over TCP are refused from now on: a run that succeeds was encrypted.
    let hba = data.join("pg_hba.conf");
    let rules = std::fs::read_to_string(&hba).expect("pg_hba.conf");
    std::fs::write(&hba, format!("hostnossl all all 127.0.0.1/32 reject\n{rules}")).expect("pg_hba.conf");
    psql(&c, c.leader(), "ALTER SYSTEM SET ssl = on");
    psql(&c, c.leader(), "SELECT pg_reload_conf()");
    eventually("TLS on", || match c.psql(c.leader(), "SHOW ssl") {
        Ok(on) if on.trim() == "on" => Ok(()),
        other => Err(format!("{other:?}")),
    })
    .await;

    let script = files.write("one.sql", "SELECT 1;\n");
    let port = c.leader().port;
    let run = |host: &str, query: &str| format!("postgres://app:app@{host}:{port}/app?{query}");
    let ca = files.arg("ca.crt");
    let works = [
        run("127.0.0.1", "sslmode=require"),
        run("127.0.0.1", "sslmode=prefer"),
        run("127.0.0.1", &format!("sslmode=verify-full&sslrootcert={ca}")),
        // The name in the certificate is not checked by verify-ca.
        run(
            "localhost",
            &format!("hostaddr=127.0.0.1&sslmode=verify-ca&sslrootcert={ca}"),
        ),
    ];
    for url in works {
        let ran = bench(&["--url", &url, "-w", &script, "-c", "2", "-t", "3", "-C"])
            .await
            .ok();
        assert!(ran.stdout.contains("6 committed, 0 failed"), "{url}: {}", ran.stdout);
    }
    let refused = [
        (run("127.0.0.1", "sslmode=disable"), "28000"),
        // Not the webpki roots' business: a private CA.
        (run("127.0.0.1", "sslmode=verify-full"), "certificate"),
        (
            run(
                "localhost",
                &format!("hostaddr=127.0.0.1&sslmode=verify-full&sslrootcert={ca}"),
            ),
            "certificate",
        ),
    ];
    for (url, expected) in refused {
        let ran = bench(&["--url", &url, "-w", &script, "-t", "1"]).await;
        let stderr = ran.stderr.trim();
        assert_eq!((ran.code, stderr.lines().count()), (1, 1), "{url}: {stderr}");
        assert!(stderr.contains(expected), "{url}: {stderr}");
    }
}
