// The official OpenAI Node.js client against qwen-appliance serve.
// GATEWAY_URL is the API base (http://127.0.0.1:PORT/v1), GATEWAY_TOKEN a
// user token. Prints one JSON line of results; exits 1 on any mismatch.
import OpenAI from "openai";
import assert from "node:assert/strict";

const client = new OpenAI({ baseURL: process.env.GATEWAY_URL, apiKey: process.env.GATEWAY_TOKEN, maxRetries: 0 });
const out = {};

const models = await client.models.list();
out.models = models.data.map((m) => m.id);
assert.ok(out.models.includes("qwen"));

const chat = await client.chat.completions.create({
  model: "qwen",
  messages: [{ role: "user", content: "hello" }],
  max_tokens: 3,
});
out.chat = chat.choices[0].message.content;
out.chatUsage = chat.usage;
assert.equal(out.chat, "tok0 tok1 tok2");

const stream = await client.chat.completions.create({
  model: "qwen",
  messages: [{ role: "user", content: "hello" }],
  max_tokens: 4,
  stream: true,
  stream_options: { include_usage: true },
});
let text = "";
let chunks = 0;
for await (const chunk of stream) {
  chunks++;
  text += chunk.choices[0]?.delta?.content ?? "";
  if (chunk.usage) out.streamUsage = chunk.usage;
}
out.stream = text;
out.chunks = chunks;
assert.equal(text, "tok0 tok1 tok2 tok3 ");
assert.equal(out.streamUsage.completion_tokens, 4);

// Errors arrive in the shape the client turns into its typed errors.
const bad = new OpenAI({ baseURL: process.env.GATEWAY_URL, apiKey: "qwa_wrong", maxRetries: 0 });
try {
  await bad.models.list();
  assert.fail("a wrong token was accepted");
} catch (e) {
  assert.ok(e instanceof OpenAI.AuthenticationError, String(e));
  out.authError = e.code;
}
try {
  await client.chat.completions.create({ model: "qwen", messages: [], max_tokens: 1000000 });
  assert.fail("max_tokens over the cap was accepted");
} catch (e) {
  assert.ok(e instanceof OpenAI.BadRequestError, String(e));
  out.capError = e.code;
}
console.log(JSON.stringify(out));
