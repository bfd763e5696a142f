// The official OpenAI Node SDK, unchanged, against Corral's gateway.
// Environment: OPENAI_BASE_URL, OPENAI_API_KEY, LIMITED_KEY (rpm 1, used up),
// CHAT_MODEL, EMBED_MODEL. Prints one JSON object with what it saw.
const OpenAI = require("openai");

async function caught(fn) {
  try {
    await fn();
    return { ok: true };
  } catch (e) {
    return { name: e.constructor.name, status: e.status, code: e.code, type: e.type, message: e.message,
             isApiError: e instanceof OpenAI.APIError };
  }
}

async function main() {
  const client = new OpenAI({ maxRetries: 0 });
  const out = {};
  const models = [];
  for await (const m of client.models.list()) models.push(m.id);
  out.models = models;
  const chat = await client.chat.completions.create({
    model: process.env.CHAT_MODEL, messages: [{ role: "user", content: "hello" }], max_tokens: 5 });
  out.chat = { finish: chat.choices[0].finish_reason, usage: chat.usage, object: chat.object };
  const stream = await client.chat.completions.create({
    model: process.env.CHAT_MODEL, messages: [{ role: "user", content: "hello" }], max_tokens: 5, stream: true });
  let text = "", chunks = 0, finish = null;
  for await (const c of stream) {
    chunks++;
    if (c.choices.length) {
      text += c.choices[0].delta.content || "";
      finish = c.choices[0].finish_reason || finish;
    }
  }
  out.stream = { chunks, text, finish };
  const emb = await client.embeddings.create({ model: process.env.EMBED_MODEL, input: ["one", "two"] });
  out.embeddings = { n: emb.data.length, dims: emb.data[0].embedding.length };
  out.bad_key = await caught(() => new OpenAI({ apiKey: "sk-corral-wrong", maxRetries: 0 }).models.list());
  out.unknown_model = await caught(() => client.chat.completions.create({
    model: "no-such-model", messages: [{ role: "user", content: "hi" }] }));
  out.limited = await caught(() => new OpenAI({ apiKey: process.env.LIMITED_KEY, maxRetries: 0 }).chat.completions.create({
    model: process.env.CHAT_MODEL, messages: [{ role: "user", content: "hi" }], max_tokens: 2 }));
  console.log(JSON.stringify(out));
}

main().catch((e) => { console.error(e); process.exit(1); });
