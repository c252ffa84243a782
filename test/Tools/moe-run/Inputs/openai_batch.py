"""An OpenAI Batch API file runs end to end on the tiny Mixtral fixture (with
a byte-level tokenizer): completions with text and token-id prompts, greedy
and sampled (per request), stops, a malformed line, a chat request without
a chat template and an unsupported field; then chat requests through a chat
template. Every output line is checked against the batch output schema:
good requests answered in full, bad ones with an error line, moe-run
exiting 2. Prints one line per check; exits 1 on the first failure.

    openai_batch.py MOE_RUN PLAN CHECKPOINT WORKDIR
"""
import json
import os
import subprocess
import sys

from run_support import byte_level_checkpoint, check, fail


def completion(custom_id, **body):
    return {"custom_id": custom_id, "method": "POST",
            "url": "/v1/completions", "body": dict(model="tiny", **body)}


def expect_keys(obj, keys, what):
    check(isinstance(obj, dict) and set(obj) == set(keys),
          f"{what}: keys {sorted(obj) if isinstance(obj, dict) else obj} "
          f"!= {sorted(keys)}")


def main():
    moe_run, plan, source, work = sys.argv[1:5]
    checkpoint = byte_level_checkpoint(source, os.path.join(work, "checkpoint"))
    run = lambda prompts, answers: subprocess.run(
        [moe_run, plan, "--checkpoint", checkpoint, "--prompts", prompts,
         "--output", answers, "--backend", "cpu", "--no-progress"],
        capture_output=True, text=True)
    requests = [
        completion("text", prompt="Once upon", max_tokens=12),
        completion("ids", prompt=[10, 20, 30, 40], max_tokens=9,
                   temperature=0),
        completion("sampled-a", prompt="abc", max_tokens=10,
                   temperature=0.9, top_p=0.95, top_k=40, seed=5),
        completion("sampled-b", prompt="abc", max_tokens=10,
                   temperature=0.9, top_p=0.95, top_k=40, seed=5),
        completion("one-of-list", prompt=["abc"], max_tokens=3, n=1,
                   stream=False, user="u1"),
        completion("stop-id", prompt=[10, 20, 30, 40], max_tokens=9,
                   stop_token_ids=[]),
        {"custom_id": "chat", "method": "POST",
         "url": "/v1/chat/completions",
         "body": {"model": "tiny",
                  "messages": [{"role": "user", "content": "hi"}]}},
        completion("penalty", prompt="x", presence_penalty=0.5),
        completion("two-prompts", prompt=["a", "b"]),
        completion("n2", prompt="a", n=2),
    ]
    lines = [json.dumps(r) for r in requests]
    lines.insert(7, '{"custom_id": "broken", "method": "POST", "url": ')
    prompts = os.path.join(work, "batch.jsonl")
    answers = os.path.join(work, "answers.jsonl")
    with open(prompts, "w") as f:
        f.write("\n".join(lines) + "\n")
    done = run(prompts, answers)
    check(done.returncode == 2,
          f"moe-run exits 2 when some requests fail: {done.returncode} "
          f"{done.stderr}")
    print("exit 2: " + done.stderr.strip().splitlines()[-1])
    with open(answers) as f:
        out = [json.loads(line) for line in f]
    check(len(out) == len(lines), f"{len(out)} answers for {len(lines)} lines")

    good = {"text", "ids", "sampled-a", "sampled-b", "one-of-list", "stop-id"}
    by_id = {}
    for index, answer in enumerate(out):
        expect_keys(answer, ["id", "custom_id", "response", "error"],
                    f"line {index}")
        check(answer["id"] == f"batch_req_{index}", f"line {index}: id")
        custom = answer["custom_id"]
        by_id[custom] = answer
        if custom in good:
            check(answer["error"] is None, f"{custom}: error {answer}")
            response = answer["response"]
            expect_keys(response, ["status_code", "request_id", "body"],
                        f"{custom}: response")
            check(response["status_code"] == 200, f"{custom}: status")
            body = response["body"]
            expect_keys(body, ["id", "object", "created", "model", "choices",
                               "usage"], f"{custom}: body")
            check(body["object"] == "text_completion" and
                  body["model"] == "tiny" and
                  isinstance(body["created"], int), f"{custom}: body {body}")
            check(len(body["choices"]) == 1, f"{custom}: one choice")
            choice = body["choices"][0]
            check({"index", "text", "logprobs", "finish_reason",
                   "token_ids"} <= set(choice), f"{custom}: choice {choice}")
            check(choice["index"] == 0 and choice["logprobs"] is None and
                  isinstance(choice["text"], str) and
                  choice["finish_reason"] in ("stop", "length"),
                  f"{custom}: choice {choice}")
            usage = body["usage"]
            expect_keys(usage, ["prompt_tokens", "completion_tokens",
                                "total_tokens"], f"{custom}: usage")
            check(usage["completion_tokens"] == len(choice["token_ids"]) and
                  usage["total_tokens"] == usage["prompt_tokens"] +
                  usage["completion_tokens"] and usage["prompt_tokens"] > 0,
                  f"{custom}: usage {usage}")
        else:
            check(answer["response"] is None, f"{custom}: no response")
            expect_keys(answer["error"], ["code", "message"],
                        f"{custom}: error")
            name = custom if custom is not None else f"line {index + 1}"
            print(f"{name}: error: {answer['error']['message']}")
    choice = lambda c: by_id[c]["response"]["body"]["choices"][0]
    usage = lambda c: by_id[c]["response"]["body"]["usage"]
    check(len(choice("text")["token_ids"]) == 12 and
          choice("text")["finish_reason"] == "length", "max_tokens 12")
    check(usage("ids")["prompt_tokens"] == 4, "token-id prompt counted")
    check(choice("sampled-a") == choice("sampled-b"),
          "the same seed samples the same answer")
    check(len(choice("one-of-list")["token_ids"]) == 3, "a list of one prompt")
    print(f"{len(good)} completions answered in full, schema checked")

    # Greedy, sampled and stopped requests answer as alone: a stop string
    # from the greedy answer's text ends it before the stop.
    text = choice("text")["text"]
    stop = text[4:7]
    again = os.path.join(work, "again.jsonl")
    with open(again, "w") as f:
        f.write(json.dumps(completion("text", prompt="Once upon",
                                      max_tokens=12, stop=[stop])) + "\n")
        f.write(json.dumps(requests[2]) + "\n")
    out2 = os.path.join(work, "again.answers.jsonl")
    done = run(again, out2)
    check(done.returncode == 0, f"second batch: {done.stderr}")
    with open(out2) as f:
        second = [json.loads(line)["response"]["body"]["choices"][0]
                  for line in f]
    check(second[0]["finish_reason"] == "stop" and
          second[0]["stop_reason"] == stop and
          second[0]["text"] == text[:text.find(stop)],
          f"stop {stop!r}: {second[0]}")
    check(second[1] == choice("sampled-a"),
          "a sampled answer does not depend on its batch")
    print("stop string ends a completion; sampled answers repeat")

    # With a chat template beside the tokenizer, chat requests render
    # through it and are answered as chat completions; one the template
    # refuses is an error line.
    with open(os.path.join(checkpoint, "chat_template.jinja"), "w") as f:
        f.write("{% if messages[0].role != 'user' %}"
                "{{ raise_exception('the first message must be the user\\'s') }}"
                "{% endif %}{% for m in messages %}<|{{ m.role }}|>"
                "{{ m.content }}\n{% endfor %}"
                "{% if add_generation_prompt %}<|assistant|>{% endif %}\n")
    chats = os.path.join(work, "chat.jsonl")
    chat = lambda custom_id, messages: {
        "custom_id": custom_id, "method": "POST",
        "url": "/v1/chat/completions",
        "body": {"model": "tiny", "messages": messages,
                 "max_completion_tokens": 6, "temperature": 0}}
    with open(chats, "w") as f:
        f.write(json.dumps(chat("hello", [{"role": "user",
                                           "content": "Once upon"}])) + "\n")
        f.write(json.dumps(chat("refused", [{"role": "assistant",
                                             "content": "x"}])) + "\n")
        # The same conversation rendered by hand (the tokenizer adds no
        # special tokens): the same prompt, so the same greedy answer.
        f.write(json.dumps(completion(
            "rendered", prompt="<|user|>Once upon\n<|assistant|>",
            max_tokens=6, temperature=0)) + "\n")
    out3 = os.path.join(work, "chat.answers.jsonl")
    done = run(chats, out3)
    check(done.returncode == 2, f"chat batch: {done.returncode} {done.stderr}")
    with open(out3) as f:
        hello, refused, rendered = [json.loads(line) for line in f]
    body = hello["response"]["body"]
    check(body["object"] == "chat.completion" and
          body["id"] == "chatcmpl-0", f"chat body {body}")
    message = body["choices"][0]["message"]
    check(message["role"] == "assistant" and isinstance(message["content"],
                                                        str) and
          len(body["choices"][0]["token_ids"]) == 6, f"chat choice {body}")
    by_hand = rendered["response"]["body"]
    check(body["usage"]["prompt_tokens"] ==
          by_hand["usage"]["prompt_tokens"] and
          body["choices"][0]["token_ids"] ==
          by_hand["choices"][0]["token_ids"],
          f"the rendered conversation is the prompt: {body} {by_hand}")
    print(f"refused: error: {refused['error']['message']}")
    print("chat requests answered as chat completions")

    # Log-probabilities: a greedy answer with them is the answer without,
    # each token's log-probability is its top alternative's (the greedy
    # pick is the most likely), the alternatives are sorted, and the
    # tokens' texts make up the answer's where each is whole characters
    # (byte tokens are named "token_id:<id>", with null bytes).
    asked = os.path.join(work, "logprobs.jsonl")
    with open(asked, "w") as f:
        f.write(json.dumps(completion("text", prompt="Once upon",
                                      max_tokens=12, logprobs=3)) + "\n")
        hello = chat("hello", [{"role": "user", "content": "Once upon"}])
        hello["body"].update(logprobs=True, top_logprobs=2)
        f.write(json.dumps(hello) + "\n")
    out4 = os.path.join(work, "logprobs.answers.jsonl")
    done = run(asked, out4)
    check(done.returncode == 0, f"logprobs batch: {done.stderr}")
    with open(out4) as f:
        text_answer, chat_answer = [json.loads(line)["response"]["body"]
                                    for line in f]
    got = text_answer["choices"][0]
    check(got["token_ids"] == choice("text")["token_ids"],
          "logprobs change no greedy pick")
    lp = got["logprobs"]
    expect_keys(lp, ["tokens", "token_logprobs", "top_logprobs",
                     "text_offset"], "completion logprobs")
    whole = not any(t.startswith("token_id:") for t in lp["tokens"])
    check(len(lp["tokens"]) == 12 and
          (not whole or "".join(lp["tokens"]) == got["text"]),
          f"tokens make up the text: {lp['tokens']} {got['text']!r}")
    offset = 0
    for value, top, at, token in zip(lp["token_logprobs"], lp["top_logprobs"],
                                     lp["text_offset"], lp["tokens"]):
        values = sorted(top.values(), reverse=True)
        check(len(top) == 3 and value <= 0 and value == values[0] and
              at == offset, f"completion token {token!r}: {value} {top} {at}")
        offset += len(token.encode())
    content = chat_answer["choices"][0]["logprobs"]["content"]
    check(len(content) == 6, f"chat logprobs: {content}")
    for item in content:
        expect_keys(item, ["token", "logprob", "bytes", "top_logprobs"],
                    "chat logprob")
        alternatives = [t["logprob"] for t in item["top_logprobs"]]
        check(len(alternatives) == 2 and
              alternatives == sorted(alternatives, reverse=True) and
              item["logprob"] == alternatives[0] and
              (bytes(item["bytes"]).decode() == item["token"]
               if item["bytes"] is not None
               else item["token"].startswith("token_id:")),
              f"chat token {item}")
    print("log-probabilities answered in both formats")


main()
