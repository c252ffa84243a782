"""A moe-run job killed and started again finishes with the answers of an
uninterrupted run, byte for byte.

Runs the job once to the end, then 20 times killed with SIGKILL at seeded
random points of its run time and started again with the same command
until it finishes; then once stopped with SIGINT (a clean stop, exit 1 and
a line saying how to resume). Each final answers file must equal the
uninterrupted one. Prints one line per kill and a summary; exits 1 on the
first difference.

    kill_and_resume.py MOE_RUN PLAN CHECKPOINT WORKDIR [extra moe-run args]
"""
import json
import os
import random
import signal
import subprocess
import sys
import time


def main():
    moe_run, plan, checkpoint, work = sys.argv[1:5]
    extra = sys.argv[5:]
    os.makedirs(work, exist_ok=True)
    rng = random.Random(20261205)
    prompts = os.path.join(work, "prompts.jsonl")
    with open(prompts, "w") as f:
        for i in range(2000):
            ids = [rng.randrange(0, 256) for _ in range(rng.randrange(1, 12))]
            f.write(json.dumps({"id": i, "input_ids": ids,
                                "max_new_tokens": rng.randrange(1, 40)}) + "\n")

    def command(output):
        return [moe_run, plan, "--checkpoint", checkpoint, "--prompts", prompts,
                "--output", output, "--backend", "cpu", "--batch", "4",
                "--threads", "1", "--no-progress"] + extra

    reference = os.path.join(work, "reference.jsonl")
    start = time.monotonic()
    subprocess.run(command(reference), check=True, stderr=subprocess.DEVNULL)
    run_seconds = time.monotonic() - start
    with open(reference, "rb") as f:
        expected = f.read()

    output = os.path.join(work, "answers.jsonl")

    def finish_and_compare(label, kept):
        done = subprocess.run(command(output), stderr=subprocess.PIPE, text=True)
        if done.returncode != 0:
            print(f"{label}: the resumed run failed: {done.stderr.strip()}")
            sys.exit(1)
        with open(output, "rb") as f:
            if f.read() != expected:
                print(f"{label}: the resumed answers differ")
                sys.exit(1)
        print(f"{label}: {kept} answers kept, resumed output identical")

    for k in range(20):
        for suffix in ("", ".partial", ".partial.job"):
            if os.path.exists(output + suffix):
                os.remove(output + suffix)
        delay = rng.uniform(0, run_seconds)
        job = subprocess.Popen(command(output), stderr=subprocess.DEVNULL)
        time.sleep(delay)
        job.send_signal(signal.SIGKILL)
        job.wait()
        kept = 0
        if os.path.exists(output + ".partial"):
            with open(output + ".partial", "rb") as f:
                kept = f.read().count(b"\n")
        finish_and_compare(f"SIGKILL {k + 1} at {delay:.2f} s", kept)

    for suffix in ("", ".partial", ".partial.job"):
        if os.path.exists(output + suffix):
            os.remove(output + suffix)
    job = subprocess.Popen(command(output), stderr=subprocess.PIPE, text=True)
    time.sleep(run_seconds / 2)
    job.send_signal(signal.SIGINT)
    _, stderr = job.communicate()
    if job.returncode == 0:
        print("SIGINT: the job finished before the signal; nothing to resume")
    elif "run the same command to resume" not in stderr:
        print(f"SIGINT: exit {job.returncode} without a resume line: {stderr}")
        sys.exit(1)
    else:
        print("SIGINT: " + stderr.strip().splitlines()[-1])
        with open(output + ".partial", "rb") as f:
            finish_and_compare("SIGINT", f.read().count(b"\n"))
    print(f"all resumed jobs match the uninterrupted run ({run_seconds:.2f} s)")


if __name__ == "__main__":
    main()
