// The page's SSE reader (gateway/static/sse.js) in Node against a running gateway.
// Run by tests/gateway/test_reader_node.py, which passes GATEWAY_URL, GATEWAY_TOKEN, SESSION_ID, BIG_SESSION_ID,
// BIG_QUESTION.
import { test } from "node:test";
import assert from "node:assert/strict";
import { sseEvents, streamChat, ApiError } from "../../gateway/static/sse.js";

const BASE = process.env.GATEWAY_URL;
const SESSION = process.env.SESSION_ID;
const BIG_SESSION = process.env.BIG_SESSION_ID;
const BIG_QUESTION = process.env.BIG_QUESTION;
const BIG_BYTES = 2_000_000;
const AUTH = { authorization: `Bearer ${process.env.GATEWAY_TOKEN}` };

// No chat_id: the gateway makes the chat and answers its id in X-Chat-Id.
const body = (session, message) => ({ session_id: session, message, history: [] });

async function rawStream(session, message) {
  const response = await fetch(`${BASE}/api/chat/stream`, {
    method: "POST", headers: { ...AUTH, "content-type": "application/json" }, body: JSON.stringify(body(session, message)),
  });
  assert.equal(response.status, 200);
  return new Uint8Array(await response.arrayBuffer());
}

/** A Response whose body arrives in the given chunk sizes (cycled). */
function chunked(bytes, sizes) {
  let offset = 0;
  let i = 0;
  const stream = new ReadableStream({
    pull(controller) {
      if (offset >= bytes.length) return controller.close();
      const size = sizes[i++ % sizes.length];
      controller.enqueue(bytes.slice(offset, offset + size));
      offset += size;
    },
  });
  return new Response(stream);
}

async function collect(response) {
  const events = [];
  for await (const event of sseEvents(response)) events.push(event);
  return events;
}

/** The reference: the whole body at once, split on "\n", every `data: ` line parsed. */
function wholeBody(bytes) {
  return new TextDecoder().decode(bytes).split("\n").filter((l) => l.startsWith("data: ")).map((l) => JSON.parse(l.slice(6)));
}

function assertOrdered(events) {
  assert.ok(events.length > 0);
  assert.deepEqual(events.map((e) => e.seq), events.map((_, i) => i + 1));
  assert.equal(events.at(-1).type, "final_response");
}

test("streamChat reads a live answer from the gateway, in order, to the final response", async () => {
  const seen = [];
  const chats = [];
  const last = await streamChat(BASE, body(SESSION, "how many rows are there?"), {
    onEvent: (e) => seen.push(e), onChat: (id) => chats.push(id), headers: AUTH,
  });
  assertOrdered(seen);
  assert.equal(chats.length, 1);
  assert.equal(last.type, "final_response");
  assert.equal(last.data.answer, 120);
});

test("every chunking of a live stream parses to the same events", async () => {
  const bytes = await rawStream(SESSION, "how many rows are there?");
  const expected = wholeBody(bytes);
  assertOrdered(expected);
  for (const sizes of [[1], [2], [3], [7], [13, 1, 5], [64], [1000], [bytes.length]]) {
    assert.deepEqual(await collect(chunked(bytes, sizes)), expected, `chunk sizes ${sizes}`);
  }
});

test("an HTTP error surfaces as ApiError with the gateway's code", async () => {
  await assert.rejects(
    streamChat(BASE, { message: "how many rows are there?" }, { onEvent: () => {}, headers: AUTH }),
    (err) => err instanceof ApiError && err.status === 422 && err.code === "MISSING_FIELD",
  );
});

test("an unknown session is an ApiError 404, and no credential a 401", async () => {
  await assert.rejects(
    streamChat(BASE, body("f".repeat(32), "how many rows are there?"), { onEvent: () => {}, headers: AUTH }),
    (err) => err instanceof ApiError && err.status === 404 && err.code === "DATASET_NOT_FOUND",
  );
  await assert.rejects(
    streamChat(BASE, body(SESSION, "how many rows are there?"), { onEvent: () => {} }),
    (err) => err instanceof ApiError && err.status === 401 && err.code === "UNAUTHENTICATED",
  );
});

test("a 2 MB event parses whole, live and across odd chunk boundaries", async () => {
  const seen = [];
  await streamChat(BASE, body(BIG_SESSION, BIG_QUESTION), { onEvent: (e) => seen.push(e), headers: AUTH });
  assertOrdered(seen);
  const sizes = seen.map((e) => JSON.stringify(e).length);
  const biggest = seen[sizes.indexOf(Math.max(...sizes))];
  assert.ok(Math.max(...sizes) >= BIG_BYTES, `largest event is ${Math.max(...sizes)} bytes`);
  assert.ok(JSON.stringify(biggest).includes("₹"), "multi-byte characters survive");

  const bytes = await rawStream(BIG_SESSION, BIG_QUESTION);
  const expected = wholeBody(bytes);
  assert.ok(Math.max(...expected.map((e) => JSON.stringify(e).length)) >= BIG_BYTES);
  for (const sizes of [[65536], [7919, 1, 3], [1 << 20]]) {
    assert.deepEqual(await collect(chunked(bytes, sizes)), expected, `chunk sizes ${sizes}`);
  }
});

test("a stream cut mid-answer resumes with Last-Event-ID and no event twice", async () => {
  const realFetch = globalThis.fetch;
  const requests = [];
  globalThis.fetch = async (url, init) => {
    requests.push({ ...init.headers, chat_id: JSON.parse(init.body).chat_id });
    const response = await realFetch(url, init);
    if (requests.length > 1) return response;
    // The first connection drops after its third event: the bytes up to it, then the end of the body.
    const text = await response.text();
    const end = text.indexOf("\n\n", text.indexOf('"seq": 3')) + 2;
    return new Response(new TextEncoder().encode(text.slice(0, end)), { status: 200, headers: response.headers });
  };
  try {
    const seen = [];
    const last = await streamChat(BASE, body(SESSION, "how many rows are there?"), {
      onEvent: (e) => seen.push(e), retryMs: 10, headers: AUTH,
    });
    assert.equal(requests.length, 2);
    assert.equal(requests[0]["last-event-id"], undefined);
    assert.equal(requests[1]["last-event-id"], "3");
    assert.equal(requests[0].chat_id, undefined);
    assert.ok(requests[1].chat_id, "the resumed request names the chat the server made");
    assertOrdered(seen);
    assert.equal(last.data.answer, 120);
  } finally {
    globalThis.fetch = realFetch;
  }
});
