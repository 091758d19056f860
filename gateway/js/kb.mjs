// The official OpenAI Node.js client against the gateway's knowledge-base
// route, baseURL .../v1/kb, streamed and not. GATEWAY_URL is the base
// (https://127.0.0.1:PORT/v1/kb), KB_MODEL the model, KB_QUESTION the
// question, HR_TOKEN a token that may read the document KB_DOC_ID,
// STAFF_TOKEN one that may not, KB_NOT_FOUND the not-found answer. Prints
// one JSON line of results; exits 1 on any mismatch.
import OpenAI from "openai";
import assert from "node:assert/strict";

const env = process.env;
const docID = Number(env.KB_DOC_ID);
const client = (token) => new OpenAI({ baseURL: env.GATEWAY_URL, apiKey: token, maxRetries: 0 });
const params = { model: env.KB_MODEL, messages: [{ role: "user", content: env.KB_QUESTION }], max_tokens: 8 };
const out = {};

// Not streamed: the answer and its citations.
const hr = await client(env.HR_TOKEN).chat.completions.create(params);
assert.equal(typeof hr.choices[0].message.content, "string");
assert.ok(Array.isArray(hr.citations), "no citations array");
assert.ok(hr.citations.some((c) => c.document_id === docID && c.sha256.length === 64), JSON.stringify(hr.citations));
out.citations = hr.citations.length;

// Streamed: the citations arrive in the last chunk.
const stream = await client(env.HR_TOKEN).chat.completions.create({ ...params, stream: true });
let chunks = [];
for await (const chunk of stream) chunks.push(chunk);
const last = chunks[chunks.length - 1];
assert.ok(Array.isArray(last.citations), "last chunk has no citations: " + JSON.stringify(last));
assert.ok(last.citations.some((c) => c.document_id === docID));
assert.ok(chunks.slice(0, -1).every((c) => c.citations === undefined));
out.streamChunks = chunks.length;

// A role that may not read the document: the not-found answer, both ways.
const staff = await client(env.STAFF_TOKEN).chat.completions.create(params);
assert.equal(staff.choices[0].message.content, env.KB_NOT_FOUND);
assert.deepEqual(staff.citations, []);
let text = "";
for await (const chunk of await client(env.STAFF_TOKEN).chat.completions.create({ ...params, stream: true })) {
  text += chunk.choices[0]?.delta?.content ?? "";
}
assert.equal(text, env.KB_NOT_FOUND);
out.notFound = text;

// A token without a knowledge-base role gets a typed permission error.
if (env.PLAIN_TOKEN) {
  try {
    await client(env.PLAIN_TOKEN).chat.completions.create(params);
    assert.fail("a token without a role was answered");
  } catch (e) {
    assert.ok(e instanceof OpenAI.PermissionDeniedError, String(e));
    out.plainError = e.code;
  }
}
console.log(JSON.stringify(out));
