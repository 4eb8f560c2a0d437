//! No lost work: checkpoints and resume (after SIGKILL and after Ctrl-C, bit-identical to an
//! uninterrupted run), divergence, gradient clipping, mismatched checkpoints, and concurrent
//! writers of one output.

mod common;

use common::*;
use dae::model_file::ModelFile;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// A dataset big enough that an epoch takes a noticeable fraction of a second.
fn data(s: &Scratch) -> std::path::PathBuf {
    s.write("train.csv", unit_csv(6000, 100))
}

/// The raw bytes of every tensor of a model, by name.
fn tensors(p: &Path) -> Vec<(String, Vec<u8>)> {
    let bytes = std::fs::read(p).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    let mut out: Vec<(String, Vec<u8>)> = header
        .as_object()
        .unwrap()
        .iter()
        .filter(|(k, _)| *k != "__metadata__")
        .map(|(k, v)| {
            let o = v["data_offsets"].as_array().unwrap();
            let (a, b) = (o[0].as_u64().unwrap() as usize, o[1].as_u64().unwrap() as usize);
            (k.clone(), bytes[8 + n + a..8 + n + b].to_vec())
        })
        .collect();
    out.sort();
    out
}

/// Epochs of the runs that are stopped part-way: an epoch of `data` takes some 20 ms on a fast
/// machine, so that many take long enough to be stopped within them, whatever the machine.
const EPOCHS: u64 = 60;

fn train_args<'a>(d: &'a str, out: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let epochs: &'static str = EPOCHS.to_string().leak();
    let mut a = vec!["train", d, "-o", out, "--hidden", "40", "--epochs", epochs, "--batch", "10", "--optimizer", "adam", "--threads", "2", "-q"];
    a.extend_from_slice(extra);
    a
}

fn wait_for(p: &Path, limit: Duration) {
    let t = Instant::now();
    while !p.exists() {
        assert!(t.elapsed() < limit, "{} never appeared", p.display());
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn killed_mid_epoch_then_resumed_gives_identical_weights() {
    let s = Scratch::new("kill");
    let d = data(&s);
    let (d, straight, resumed, ck) = (d.to_str().unwrap(), s.path("straight.safetensors"), s.path("resumed.safetensors"), s.path("run.ckpt"));
    assert_ok(&dae(train_args(d, straight.to_str().unwrap(), &[])));

    let args = train_args(d, resumed.to_str().unwrap(), &["--checkpoint", ck.to_str().unwrap(), "--checkpoint-every", "1"]);
    let mut child = Command::new(env!("CARGO_BIN_EXE_dae")).args(&args).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
    // The first checkpoint (end of epoch 1), then a little into a later epoch.
    wait_for(&ck, Duration::from_secs(120));
    std::thread::sleep(Duration::from_millis(150));
    child.kill().unwrap(); // SIGKILL: no chance to clean up
    child.wait().unwrap();
    assert!(!resumed.exists(), "killed before the end: no model yet");
    let position: serde_json::Value = ModelFile::read(&ck).unwrap().meta("position").unwrap();
    let done = position["epochs_done"].as_u64().unwrap();
    assert!((1..EPOCHS).contains(&done), "killed part-way: {position}");

    let mut again = args.clone();
    again.extend(["--resume", ck.to_str().unwrap()]);
    assert_ok(&dae(&again));
    assert_eq!(tensors(&straight), tensors(&resumed), "resumed weights differ from the uninterrupted run");
    // The history is whole: one record per epoch.
    let f = ModelFile::read(&resumed).unwrap();
    let history: Vec<serde_json::Value> = f.meta("history").unwrap();
    assert_eq!(history.len() as u64, EPOCHS);
}

#[test]
fn ctrl_c_saves_a_checkpoint_and_exits_130() {
    let s = Scratch::new("sigint");
    let d = data(&s);
    let (d, straight, resumed) = (d.to_str().unwrap(), s.path("straight.safetensors"), s.path("resumed.safetensors"));
    assert_ok(&dae(train_args(d, straight.to_str().unwrap(), &[])));
    let log = s.path("log.jsonl");
    let args = train_args(d, resumed.to_str().unwrap(), &["--log-json", log.to_str().unwrap()]);
    let child = Command::new(env!("CARGO_BIN_EXE_dae")).args(&args).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    // Into the second epoch, then Ctrl-C.
    let t = Instant::now();
    while std::fs::read_to_string(&log).map_or(0, |l| l.lines().count()) < 1 {
        assert!(t.elapsed() < Duration::from_secs(120));
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(100));
    assert!(Command::new("kill").args(["-INT", &child.id().to_string()]).status().unwrap().success());
    let o = child.wait_with_output().unwrap();
    assert_eq!(o.status.code(), Some(130), "{}", String::from_utf8_lossy(&o.stderr));
    let err = String::from_utf8_lossy(&o.stderr);
    let ck = s.path("resumed.safetensors.ckpt");
    assert!(err.contains("interrupted") && err.contains(ck.to_str().unwrap()), "{err}");
    assert!(ck.exists() && !resumed.exists());
    // Resuming from the middle of an epoch finishes exactly as if nothing had happened.
    let mut again = args.clone();
    again.extend(["--resume", ck.to_str().unwrap()]);
    assert_ok(&dae(&again));
    assert_eq!(tensors(&straight), tensors(&resumed));
    // The resumed run appended to the log: every epoch once, in order.
    let epochs: Vec<u64> = std::fs::read_to_string(&log)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["epoch"].as_u64().unwrap())
        .collect();
    assert_eq!(epochs, (1..=EPOCHS).collect::<Vec<u64>>());
}

/// A run that stopped between checkpoints (a crash with --checkpoint-every above 1) has logged
/// epochs that the resumed run runs again. Here the stand-in for that is resuming twice from
/// the same checkpoint of epoch 2 with --epochs raised to 3: the second resume finds epoch 3
/// in the log after the point the checkpoint recorded. Resuming drops those lines (and says
/// so), so the log holds every epoch once; an earlier run's lines in the same log stay, and
/// when another run has logged after them, nothing is dropped.
#[test]
fn resuming_drops_the_log_lines_of_epochs_after_the_checkpoint() {
    let s = Scratch::new("log-resume");
    let x = s.write("x.csv", unit_csv(300, 20));
    let x = x.to_str().unwrap();
    let read = |p: &Path| -> Vec<(Option<String>, u64)> {
        std::fs::read_to_string(p)
            .unwrap()
            .lines()
            .map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).unwrap();
                (v["stage"].as_str().map(str::to_string), v["epoch"].as_u64().unwrap())
            })
            .collect()
    };
    let earlier = "{\"stage\":\"layer 9/9\",\"epoch\":1,\"train_loss\":1.0}\n";
    for (command, shape, (before, after), stages) in [
        ("train", ["--hidden", "8"], ("2", "3"), vec![(None, 3)]),
        ("pretrain", ["--layers", "8,4"], ("3,2", "3,3"), vec![(Some("layer 1/2"), 3), (Some("layer 2/2"), 3)]),
    ] {
        let (out, ck, log) = (s.path(&format!("{command}.safetensors")), s.path(&format!("{command}.ckpt")), s.path(&format!("{command}.jsonl")));
        let saved = s.path(&format!("{command}-2.ckpt"));
        std::fs::write(&log, earlier).unwrap();
        let run = |epochs: &str, from: Option<&Path>, output: &Path| {
            let mut args = vec![command, x, "-o", output.to_str().unwrap(), shape[0], shape[1], "--epochs", epochs, "--batch", "20"];
            args.extend(["--checkpoint", ck.to_str().unwrap(), "--checkpoint-every", "2", "--log-json", log.to_str().unwrap()]);
            if let Some(from) = from {
                args.extend(["--resume", from.to_str().unwrap()]);
            }
            let o = dae(&args);
            assert_ok(&o);
            String::from_utf8_lossy(&o.stderr).to_string()
        };
        // Epoch 2 of the last stage, checkpointed and kept; then that checkpoint resumed to 3.
        run(before, None, &out);
        std::fs::copy(&ck, &saved).unwrap();
        let err = run(after, Some(&saved), &out);
        assert!(!err.contains("dropped"), "{command}: nothing to drop yet: {err}");
        let mut every: Vec<(Option<String>, u64)> = vec![(Some("layer 9/9".to_string()), 1)];
        for &(st, n) in &stages {
            every.extend((1..=n).map(|e| (st.map(str::to_string), e)));
        }
        assert_eq!(read(&log), every, "{command}: the first runs");
        // Resumed from the same checkpoint again: epoch 3 of the last stage is dropped from the
        // log, runs again and is logged once.
        let err = run(after, Some(&saved), &out);
        assert!(err.contains(&format!("{}: dropped the epoch logged after the checkpoint was written (it runs again)", log.display())), "{command}: {err}");
        assert_eq!(read(&log), every, "{command}: after resuming from the older checkpoint");
        // Another run logs to the same file after epoch 3; then the old checkpoint is resumed
        // once more: nothing is dropped (its epoch 3 is logged again, after the other run's).
        let other = s.path(&format!("{command}-other.safetensors"));
        assert_ok(&dae([command, x, "-o", other.to_str().unwrap(), shape[0], shape[1], "--epochs", before, "--batch", "20", "-q", "--log-json", log.to_str().unwrap()]));
        let with_other = read(&log);
        assert!(with_other.len() > every.len());
        let err = run(after, Some(&saved), &out);
        assert!(!err.contains("dropped"), "{command}: {err}");
        let mut kept = with_other.clone();
        kept.push(every.last().unwrap().clone());
        assert_eq!(read(&log), kept, "{command}: a log with another run's lines after");
    }
}

/// Ctrl-C during pretraining says which layer stopped.
#[test]
fn ctrl_c_in_pretraining_names_the_layer() {
    let s = Scratch::new("sigint-stack");
    let d = data(&s);
    let (out, log) = (s.path("stack.safetensors"), s.path("log.jsonl"));
    let args = ["pretrain", d.to_str().unwrap(), "-o", out.to_str().unwrap(), "--layers", "40,40", "--epochs", &EPOCHS.to_string(), "--batch", "10", "--threads", "2", "-q", "--log-json", log.to_str().unwrap()];
    let child = Command::new(env!("CARGO_BIN_EXE_dae")).args(args).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let t = Instant::now();
    while std::fs::read_to_string(&log).map_or(0, |l| l.lines().count()) < 1 {
        assert!(t.elapsed() < Duration::from_secs(120));
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(Command::new("kill").args(["-INT", &child.id().to_string()]).status().unwrap().success());
    let o = child.wait_with_output().unwrap();
    assert_eq!(o.status.code(), Some(130), "{}", String::from_utf8_lossy(&o.stderr));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("interrupted in layer 1 of 2, epoch"), "{err}");
}

#[test]
fn pretraining_and_fine_tuning_resume_too() {
    let s = Scratch::new("resume-stack");
    let (features, labels) = (s.write("x.csv", unit_csv(400, 20)), s.write("y.csv", (0..400).map(|i| format!("{}\n", i % 3)).collect::<String>()));
    let (x, y) = (features.to_str().unwrap(), labels.to_str().unwrap());
    // Pretraining: stop after layer 1 (--epochs 1,1 then resumed to 1,3 would change the
    // identity), so checkpoint every epoch and resume from the file as it is after the run.
    let stack = s.path("stack.safetensors");
    let ck = s.path("stack.ckpt");
    let args = ["pretrain", x, "-o", stack.to_str().unwrap(), "--layers", "12,6", "--epochs", "3", "--batch", "20", "-q"];
    assert_ok(&dae(args));
    let straight = tensors(&stack);
    let mut with_ck = args.to_vec();
    with_ck.extend(["--checkpoint", ck.to_str().unwrap()]);
    assert_ok(&dae(&with_ck));
    assert_eq!(tensors(&stack), straight, "checkpointing does not change the result");
    // Resuming a finished run redoes nothing and gives the same stack.
    let mut resume = with_ck.clone();
    resume.extend(["--resume", ck.to_str().unwrap()]);
    assert_ok(&dae(&resume));
    assert_eq!(tensors(&stack), straight);

    let clf = s.path("clf.safetensors");
    let fck = s.path("clf.ckpt");
    let fargs = ["finetune", stack.to_str().unwrap(), x, "--labels", y, "-o", clf.to_str().unwrap(), "--epochs", "4", "--dropout", "0.1", "-q"];
    assert_ok(&dae(fargs));
    let straight = tensors(&clf);
    // Two epochs, then resumed to four: the same as four at once.
    let mut two = fargs.to_vec();
    let at = two.iter().position(|a| *a == "4").unwrap();
    two[at] = "2";
    two.extend(["--checkpoint", fck.to_str().unwrap()]);
    assert_ok(&dae(&two));
    let mut rest = fargs.to_vec();
    rest.extend(["--resume", fck.to_str().unwrap()]);
    assert_ok(&dae(&rest));
    assert_eq!(tensors(&clf), straight, "2 + 2 epochs differ from 4");
}

#[test]
fn a_checkpoint_of_other_settings_or_data_is_refused() {
    let s = Scratch::new("mismatch");
    let d = s.write("a.csv", unit_csv(50, 8));
    let other = s.write("b.csv", unit_csv(51, 8));
    let (m, ck) = (s.path("m.safetensors"), s.path("m.ckpt"));
    let base = ["train", d.to_str().unwrap(), "-o", m.to_str().unwrap(), "--hidden", "4", "--epochs", "2", "--checkpoint", ck.to_str().unwrap(), "-q"];
    assert_ok(&dae(base));
    let mut lr = base.to_vec();
    lr.extend(["--lr", "0.05", "--resume", ck.to_str().unwrap()]);
    assert_fails(&dae(&lr), 2, &["m.ckpt", "does not match", "lr"]);
    let mut data = base.to_vec();
    data[1] = other.to_str().unwrap();
    data.extend(["--resume", ck.to_str().unwrap()]);
    assert_fails(&dae(&data), 2, &["m.ckpt", "does not match", "data"]);
    let mut not_ck = base.to_vec();
    not_ck.extend(["--resume", m.to_str().unwrap()]);
    assert_fails(&dae(&not_ck), 2, &["not a checkpoint"]);
    let o = dae(["pretrain", d.to_str().unwrap(), "-o", s.path("s").to_str().unwrap(), "--layers", "4", "--resume", ck.to_str().unwrap()]);
    assert_fails(&o, 2, &["written by `dae train`", "not `dae pretrain`"]);
    // More epochs are allowed: training continues.
    let mut more = base.to_vec();
    let at = more.iter().position(|a| *a == "2").unwrap();
    more[at] = "4";
    more.extend(["--resume", ck.to_str().unwrap()]);
    assert_ok(&dae(&more));
    let f = ModelFile::read(&m).unwrap();
    assert_eq!(f.meta::<Vec<serde_json::Value>>("history").unwrap().len(), 4);
    // Fewer epochs than the checkpoint has done are refused (the model would claim 2 epochs
    // beside a history of 4).
    let ck4 = s.path("m4.ckpt");
    let mut four = more.clone();
    let at = four.iter().position(|a| *a == ck.to_str().unwrap()).unwrap();
    four[at] = ck4.to_str().unwrap();
    four.truncate(four.len() - 2);
    assert_ok(&dae(&four));
    let mut fewer = base.to_vec();
    fewer.extend(["--resume", ck4.to_str().unwrap()]);
    assert_fails(&dae(&fewer), 2, &["--epochs", "has done 4 epochs"]);
    // A stack's finished layer cannot train further; its last layer can.
    let stack = s.path("s.safetensors");
    let sck = s.path("s.ckpt");
    let pre = |epochs: &'static str, extra: &[&str]| {
        let mut a = vec!["pretrain", d.to_str().unwrap(), "-o", stack.to_str().unwrap(), "--layers", "4,3", "--epochs", epochs, "-q"];
        a.extend_from_slice(extra);
        dae(a.iter().map(|s| s.to_string()).collect::<Vec<_>>())
    };
    assert_ok(&pre("1", &["--checkpoint", sck.to_str().unwrap()]));
    assert_fails(&pre("3", &["--resume", sck.to_str().unwrap()]), 2, &["--epochs", "layer 1 finished after 1 epoch"]);
    assert_ok(&pre("1,3", &["--resume", sck.to_str().unwrap()]));
}

#[test]
fn divergence_stops_with_a_remedy_and_keeps_the_old_model() {
    let s = Scratch::new("diverge");
    // Squared error on large values with a huge rate overflows.
    let mut csv = String::new();
    for r in 0..200 {
        csv += &format!("{},{},{}\n", r as f32 * 1000.0, (r % 7) as f32 * 5000.0, 3e4);
    }
    let d = s.write("big.csv", csv);
    let m = s.write("m.safetensors", b"previous model");
    let args = ["train", d.to_str().unwrap(), "-o", m.to_str().unwrap(), "--loss", "squared-error", "--decoder", "identity", "--encoder", "identity", "--hidden", "2", "--lr", "10", "--epochs", "5"];
    let o = dae(args);
    assert_fails(&o, 1, &["diverged at epoch 1, batch", "smaller learning rate", "--max-grad-norm"]);
    assert_eq!(std::fs::read(&m).unwrap(), b"previous model", "a failed run leaves the old file");
    // Gradient clipping keeps the same run finite.
    let mut clipped = args.to_vec();
    clipped.extend(["--max-grad-norm", "1", "-q"]);
    assert_ok(&dae(&clipped));
    let o = dae(["train", d.to_str().unwrap(), "-o", s.path("x").to_str().unwrap(), "--max-grad-norm", "0"]);
    assert_fails(&o, 2, &["--max-grad-norm"]);
}

#[test]
fn concurrent_writers_never_leave_a_corrupt_model() {
    let s = Scratch::new("race");
    let d = s.write("d.csv", unit_csv(300, 30));
    let out = s.path("shared.safetensors");
    let start = |seed: &str| {
        Command::new(env!("CARGO_BIN_EXE_dae"))
            .args(["train", d.to_str().unwrap(), "-o", out.to_str().unwrap(), "--hidden", "10", "--epochs", "3", "--seed", seed, "-q"])
            .spawn()
            .unwrap()
    };
    let (mut a, mut b) = (start("1"), start("2"));
    // A reader polling all the while sees either no file or a whole model, never half of one.
    let mut reads = 0;
    loop {
        let done = a.try_wait().unwrap().is_some() && b.try_wait().unwrap().is_some();
        if out.exists() {
            ModelFile::read(&out).expect("a reader never sees a half-written model");
            reads += 1;
        }
        if done {
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(a.wait().unwrap().success() && b.wait().unwrap().success());
    ModelFile::read(&out).expect("the last writer's model is whole");
    assert!(reads > 0);
    assert!(!s.files().iter().any(|f| f.ends_with(".tmp")), "no temporary files left: {:?}", s.files());
}

/// Ctrl-C while `reconstruct` writes its rows as it computes them (its temporary file exists):
/// the command ends with exit code 130, the old output stays, and no temporary file is left.
#[test]
fn ctrl_c_while_streaming_keeps_the_old_output() {
    let s = Scratch::new("sigint-stream");
    let d = data(&s);
    let m = s.path("m.safetensors");
    assert_ok(&dae(["train", d.to_str().unwrap(), "-o", m.to_str().unwrap(), "--hidden", "8", "--epochs", "1", "-q"]));
    let big = s.write("big.csv", unit_csv(100000, 100));
    let out = s.write("out.csv", "old\n");
    let tmp = || s.files().into_iter().filter(|f| f.ends_with(".tmp")).collect::<Vec<_>>();
    let mut child = Command::new(env!("CARGO_BIN_EXE_dae"))
        .args(["reconstruct", m.to_str().unwrap(), big.to_str().unwrap(), "-o", out.to_str().unwrap(), "--threads", "1", "-q"])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let t = Instant::now();
    while tmp().is_empty() {
        assert!(child.try_wait().unwrap().is_none(), "finished before it could be interrupted: make the data bigger");
        assert!(t.elapsed() < Duration::from_secs(60));
        std::thread::sleep(Duration::from_millis(1));
    }
    assert!(Command::new("kill").args(["-INT", &child.id().to_string()]).status().unwrap().success());
    let o = child.wait_with_output().unwrap();
    assert_eq!(o.status.code(), Some(130), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stderr).contains("was not written"));
    assert_eq!(std::fs::read_to_string(&out).unwrap(), "old\n");
    assert!(tmp().is_empty(), "{:?} left behind", tmp());
}
