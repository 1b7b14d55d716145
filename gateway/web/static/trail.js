/* The audit trail's verification in the browser, trusting nothing the server says.

   For an entry of the trail, the browser fetches the ledger's key chain and the entry's
   inclusion proof and checks them with WebCrypto alone, as audit/FORMAT.md specifies:

   - the key chain (§5): each key id is the SHA-256 of its public key, each later key is
     endorsed by the key before it, and the first key is the one this browser trusts
     (pinned at first use, or entered by the regulator from the operator's publication);
   - the checkpoint (§4): its Ed25519 signature over "sbx/checkpoint/v1\n" ‖ canonical
     JSON, by a key that was allowed to sign a tree of its size (§5.2);
   - the witness (§8.2): the largest checkpoint this browser verified is kept, and a newer
     or older one must be shown consistent with it (RFC 9162 §2.1.4.2), so a ledger that
     was rolled back or rewritten fails;
   - the entry (§3, §8.3): its bytes are canonical JSON, say the seq asked for, hash to
     the leaf, and the audit path leads from the leaf to the signed root (RFC 9162
     §2.1.3.2);
   - what the page shows: the row's seq, time, actor, action, object, outcome and detail
     must be what the verified bytes say.

   No inline script: the page loads this file, which finds its rows by data attributes.
   Messages come from the page (data-messages), in the page's language. */
(function () {
  "use strict";

  const DOMAIN_CHECKPOINT = "sbx/checkpoint/v1\n";
  const DOMAIN_ENDORSEMENT = "sbx/key-endorsement/v1\n";
  const HEX64 = /^[0-9a-f]{64}$/;
  const BASE64 = /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/;
  const KEY_MEMBERS = ["alg", "created", "from_size", "key_id", "ledger", "previous", "public_key", "v"];
  const CHECKPOINT_MEMBERS = ["key_id", "ledger", "prev", "root", "sig", "size", "time", "v"];
  const ENTRY_MEMBERS = ["action", "actor", "detail", "object", "outcome", "prev", "seq", "time", "v"];
  const PROOF_MEMBERS = ["checkpoint", "entry", "leaf_hash", "path", "seq", "tree_size", "type"];
  const SHOWN_FIELDS = ["seq", "time", "actor", "action", "object", "outcome", "detail"];
  const TRUST_KEY = "sbx.trail.trust";
  const WITNESS_KEY = "sbx.trail.witness";
  const API = "/api/v1/ledger";
  const encoder = new TextEncoder();

  /** A verification that failed: ``code`` names the reason, ``params`` fill its message. */
  class Failure extends Error {
    constructor(code, params) {
      super(code);
      this.code = code;
      this.params = params || {};
    }
  }

  function fail(code, params) {
    throw new Failure(code, params);
  }

  // ------------------------------------------------------------ canonical JSON (§2)
  const ESCAPES = { '"': '\\"', "\\": "\\\\", "\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r", "\t": "\\t" };

  function encodeString(text) {
    if (!text.isWellFormed()) fail("not-canonical", { why: "lone surrogate" });
    return '"' + text.replace(/["\\\u0000-\u001f]/g, (c) =>
      ESCAPES[c] || "\\u00" + c.charCodeAt(0).toString(16).padStart(2, "0")) + '"';
  }

  /** Order of keys by Unicode code point: a surrogate (part of a code point above
      U+FFFF) sorts after every other UTF-16 unit, unlike JavaScript's default order. */
  function byCodePoint(a, b) {
    const n = Math.min(a.length, b.length);
    for (let i = 0; i < n; i++) {
      let x = a.charCodeAt(i);
      let y = b.charCodeAt(i);
      if (x !== y) {
        if (x >= 0xd800 && x <= 0xdfff) x += 0x10000;
        if (y >= 0xd800 && y <= 0xdfff) y += 0x10000;
        return x - y;
      }
    }
    return a.length - b.length;
  }

  function encodeValue(value) {
    if (value === null) return "null";
    if (value === true) return "true";
    if (value === false) return "false";
    if (typeof value === "string") return encodeString(value);
    if (typeof value === "number") {
      if (!Number.isSafeInteger(value)) fail("not-canonical", { why: "not a safe integer" });
      return String(value);
    }
    if (Array.isArray(value)) return "[" + value.map(encodeValue).join(",") + "]";
    if (typeof value === "object") {
      const keys = Object.keys(value).sort(byCodePoint);
      return "{" + keys.map((k) => encodeString(k) + ":" + encodeValue(value[k])).join(",") + "}";
    }
    fail("not-canonical", { why: typeof value });
  }

  /** The canonical JSON text of ``value`` (FORMAT.md §2); its UTF-8 bytes are signed. */
  function canonical(value) {
    try {
      return encodeValue(value);
    } catch (error) {
      if (error instanceof Failure) throw error;
      fail("not-canonical", { why: String(error) }); // nested too deeply
    }
  }

  /** Parse ``text`` and require that it is exactly the canonical form of its value:
      duplicate keys, fractions, unsafe integers, extra spaces and needless escapes fail. */
  function parseCanonical(text) {
    if (typeof text !== "string") fail("not-canonical", { why: "not text" });
    let value;
    try {
      value = JSON.parse(text);
    } catch (error) {
      fail("not-canonical", { why: "not JSON" });
    }
    if (canonical(value) !== text) fail("not-canonical", { why: "not in canonical form" });
    return value;
  }

  // ------------------------------------------------------------ bytes and hashes
  function utf8(text) {
    return encoder.encode(text);
  }

  function concat(...parts) {
    const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
    let at = 0;
    for (const part of parts) {
      out.set(part, at);
      at += part.length;
    }
    return out;
  }

  function toHex(bytes) {
    return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
  }

  function fromHex(text) {
    const out = new Uint8Array(text.length / 2);
    for (let i = 0; i < out.length; i++) out[i] = parseInt(text.substr(i * 2, 2), 16);
    return out;
  }

  function fromBase64(text) {
    if (typeof text !== "string" || !BASE64.test(text)) return null;
    return Uint8Array.from(atob(text), (c) => c.charCodeAt(0));
  }

  function same(a, b) {
    return a.length === b.length && a.every((x, i) => x === b[i]);
  }

  async function sha256(bytes) {
    return new Uint8Array(await crypto.subtle.digest("SHA-256", bytes));
  }

  const leafHash = (bytes) => sha256(concat(Uint8Array.of(0), bytes));
  const nodeHash = (left, right) => sha256(concat(Uint8Array.of(1), left, right));

  async function ed25519Verify(publicKey, signature, message) {
    if (signature === null || signature.length !== 64) return false;
    let key;
    try {
      key = await crypto.subtle.importKey("raw", publicKey, { name: "Ed25519" }, false, ["verify"]);
    } catch (error) {
      fail("no-crypto");
    }
    return crypto.subtle.verify({ name: "Ed25519" }, key, signature, message);
  }

  // ------------------------------------------------------------ Merkle proofs (RFC 9162)
  // Arithmetic rather than bit operators: tree sizes may exceed 32 bits.
  const odd = (n) => n % 2 === 1;
  const half = (n) => Math.floor(n / 2);

  function checkHashes(path) {
    if (!Array.isArray(path) || !path.every((h) => typeof h === "string" && HEX64.test(h))) {
      return null;
    }
    return path.map(fromHex);
  }

  /** The root that ``path`` implies for ``leaf`` at ``index`` in a tree of ``size``
      leaves (§2.1.3.2), or null when the path cannot be one for that position. */
  async function rootFromInclusion(leaf, index, size, path) {
    if (!(Number.isSafeInteger(index) && Number.isSafeInteger(size) && index >= 0 && index < size)) {
      return null;
    }
    let fn = index;
    let sn = size - 1;
    let result = leaf;
    for (const element of path) {
      if (sn === 0) return null; // longer than the tree is deep
      if (odd(fn) || fn === sn) {
        result = await nodeHash(element, result);
        while (!odd(fn) && fn !== 0) {
          fn = half(fn);
          sn = half(sn);
        }
      } else {
        result = await nodeHash(result, element);
      }
      fn = half(fn);
      sn = half(sn);
    }
    return sn === 0 ? result : null;
  }

  /** Whether ``path`` shows that the tree of ``oldSize`` with ``oldRoot`` is a prefix of
      the tree of ``newSize`` with ``newRoot`` (§2.1.4.2). */
  async function verifyConsistency(oldSize, newSize, oldRoot, newRoot, path) {
    if (!(Number.isSafeInteger(oldSize) && Number.isSafeInteger(newSize))) return false;
    if (oldSize < 1 || newSize < oldSize) return false;
    if (oldSize === newSize) return path.length === 0 && same(oldRoot, newRoot);
    if (path.length === 0) return false;
    const proof = path.slice();
    let power = oldSize;
    while (!odd(power)) power = half(power);
    if (power === 1) proof.unshift(oldRoot); // the old tree is a perfect subtree
    let fn = oldSize - 1;
    let sn = newSize - 1;
    while (odd(fn)) {
      fn = half(fn);
      sn = half(sn);
    }
    let fr = proof[0];
    let sr = proof[0];
    for (const element of proof.slice(1)) {
      if (sn === 0) return false;
      if (odd(fn) || fn === sn) {
        fr = await nodeHash(element, fr);
        sr = await nodeHash(element, sr);
        while (!odd(fn) && fn !== 0) {
          fn = half(fn);
          sn = half(sn);
        }
      } else {
        sr = await nodeHash(sr, element);
      }
      fn = half(fn);
      sn = half(sn);
    }
    return sn === 0 && same(fr, oldRoot) && same(sr, newRoot);
  }

  // ------------------------------------------------------------ records
  const isObject = (v) => v !== null && typeof v === "object" && !Array.isArray(v);
  const isCount = (v) => Number.isSafeInteger(v) && v >= 0;
  const short = (keyId) => String(keyId).slice(0, 16) + "…";

  function hasMembers(value, required, optional) {
    if (!isObject(value)) return false;
    const keys = Object.keys(value);
    return required.every((k) => keys.includes(k)) &&
      keys.every((k) => required.includes(k) || (optional || []).includes(k));
  }

  function without(record, member) {
    const copy = Object.assign({}, record);
    delete copy[member];
    return copy;
  }

  /** The ledger's key chain, checked link by link (§5), as {ledger, keys}. */
  async function checkKeyChain(document) {
    if (!isObject(document) || typeof document.ledger !== "string" ||
        !Array.isArray(document.keys) || document.keys.length === 0) {
      fail("keys-malformed", { why: "no ledger id or no keys" });
    }
    const keys = [];
    for (const record of document.keys) {
      if (!hasMembers(record, KEY_MEMBERS, ["endorsement"])) {
        fail("keys-malformed", { why: "a key record has missing or unknown members" });
      }
      const id = String(record.key_id);
      if (record.alg !== "Ed25519" || record.v !== 1) fail("keys-malformed", { why: "unknown algorithm or version" });
      if (record.ledger !== document.ledger) fail("key-chain", { key: short(id) });
      if (!isCount(record.created) || !isCount(record.from_size)) {
        fail("keys-malformed", { why: "created and from_size must be integers" });
      }
      const publicKey = fromBase64(record.public_key);
      if (publicKey === null || publicKey.length !== 32) fail("keys-malformed", { why: "a public key is not 32 bytes" });
      if (toHex(await sha256(publicKey)) !== record.key_id) fail("key-id", { key: short(id) });
      if (keys.some((k) => k.key_id === id)) fail("key-chain", { key: short(id) });
      const last = keys[keys.length - 1];
      if (last === undefined) {
        if (record.previous !== null || "endorsement" in record || record.from_size !== 1) {
          fail("key-chain", { key: short(id) });
        }
      } else {
        if (record.previous !== last.key_id) fail("key-chain", { key: short(id) });
        if (record.from_size < last.from_size) fail("key-starts-early", { key: short(id) });
        const message = concat(utf8(DOMAIN_ENDORSEMENT), utf8(canonical(without(record, "endorsement"))));
        if (!(await ed25519Verify(last.publicKey, fromBase64(record.endorsement), message))) {
          fail("endorsement", { key: short(id) });
        }
      }
      keys.push({ key_id: id, from_size: record.from_size, publicKey, record });
    }
    return { ledger: document.ledger, keys };
  }

  /** The key that may sign a checkpoint of ``size`` (§5.2), or a failure. */
  function signerFor(chain, keyId, size) {
    const index = chain.keys.findIndex((k) => k.key_id === keyId);
    if (index < 0) fail("unknown-key", { key: short(keyId) });
    const key = chain.keys[index];
    const next = chain.keys[index + 1];
    if (size < key.from_size || (next !== undefined && size >= next.from_size)) {
      fail("key-not-allowed", { key: short(keyId), size });
    }
    return key;
  }

  function checkCheckpointShape(checkpoint) {
    if (!hasMembers(checkpoint, CHECKPOINT_MEMBERS)) fail("checkpoint-malformed", { why: "missing or unknown members" });
    if (checkpoint.v !== 1) fail("checkpoint-malformed", { why: "unknown version" });
    if (!isCount(checkpoint.size) || checkpoint.size < 1 || !isCount(checkpoint.time)) {
      fail("checkpoint-malformed", { why: "size and time must be integers" });
    }
    for (const name of ["key_id", "prev", "root"]) {
      if (typeof checkpoint[name] !== "string" || !HEX64.test(checkpoint[name])) {
        fail("checkpoint-malformed", { why: name + " must be 64 hex digits" });
      }
    }
    if (typeof checkpoint.ledger !== "string" || typeof checkpoint.sig !== "string") {
      fail("checkpoint-malformed", { why: "ledger and sig must be text" });
    }
  }

  /** The checkpoint's signature, by a key of the chain allowed to sign its size (§4). */
  async function checkCheckpoint(chain, checkpoint) {
    checkCheckpointShape(checkpoint);
    if (checkpoint.ledger !== chain.ledger) fail("checkpoint-ledger", { ledger: checkpoint.ledger });
    const key = signerFor(chain, checkpoint.key_id, checkpoint.size);
    const message = concat(utf8(DOMAIN_CHECKPOINT), utf8(canonical(without(checkpoint, "sig"))));
    if (!(await ed25519Verify(key.publicKey, fromBase64(checkpoint.sig), message))) {
      fail("signature", { key: short(key.key_id), size: checkpoint.size });
    }
    return key;
  }

  // ------------------------------------------------------------ what this browser keeps
  function browserStore(storage) {
    const read = (name) => {
      try {
        return JSON.parse(storage.getItem(name) || "null");
      } catch (error) {
        return null;
      }
    };
    return {
      trust: () => read(TRUST_KEY),
      setTrust: (value) => storage.setItem(TRUST_KEY, JSON.stringify(value)),
      witness: () => read(WITNESS_KEY),
      setWitness: (value) => storage.setItem(WITNESS_KEY, JSON.stringify(value)),
    };
  }

  /** The first key must be the trusted one: pinned now if nothing is trusted yet. */
  function checkTrust(chain, store) {
    const first = chain.keys[0].key_id;
    const trusted = store.trust();
    if (trusted === null || typeof trusted.key_id !== "string") {
      store.setTrust({ key_id: first, ledger: chain.ledger, source: "first-use", at: Date.now() });
      return;
    }
    if (trusted.key_id !== first) fail("first-key", { key: short(first), trusted: short(trusted.key_id) });
    if (trusted.ledger && trusted.ledger !== chain.ledger) {
      fail("ledger-changed", { ledger: chain.ledger, trusted: trusted.ledger });
    }
    if (!trusted.ledger) store.setTrust(Object.assign({}, trusted, { ledger: chain.ledger }));
  }

  async function fetchJSON(url, what) {
    let answer;
    try {
      answer = await fetch(url, { credentials: "same-origin", cache: "no-store", headers: { Accept: "application/json" } });
    } catch (error) {
      fail("fetch", { what, status: "-" });
    }
    if (!answer.ok) fail("fetch", { what, status: answer.status });
    try {
      return await answer.json();
    } catch (error) {
      fail("fetch", { what, status: answer.status });
    }
  }

  /** Hold the checkpoint against the largest one this browser verified before (§8.2). */
  async function witness(chain, checkpoint, store) {
    const held = store.witness();
    const keep = () => store.setWitness({ ledger: chain.ledger, checkpoint });
    if (!isObject(held) || held.ledger !== chain.ledger || !isObject(held.checkpoint)) {
      keep();
      return null;
    }
    const old = held.checkpoint;
    if (old.size === checkpoint.size) {
      if (old.root !== checkpoint.root) fail("fork", { size: old.size });
      return old;
    }
    const [small, large] = old.size < checkpoint.size ? [old, checkpoint] : [checkpoint, old];
    let proof;
    try {
      proof = await fetchJSON(`${API}/consistency?old=${small.size}&new=${large.size}`, "consistency");
    } catch (error) {
      // The ledger cannot prove that it still holds (or grew from) what was verified.
      if (old.size > checkpoint.size) fail("rollback", { size: old.size, now: checkpoint.size });
      fail("consistency", { old: small.size, new: large.size });
    }
    const path = isObject(proof) ? checkHashes(proof.path) : null;
    if (path === null || !isObject(proof.old) || !isObject(proof.new)) {
      fail("consistency", { old: small.size, new: large.size });
    }
    // The server's own copies of the two checkpoints must be the ones verified here.
    if (proof.old.size !== small.size || proof.new.size !== large.size) {
      fail("consistency", { old: small.size, new: large.size });
    }
    if (proof.old.root !== small.root || proof.new.root !== large.root) {
      fail("fork", { size: old.size });
    }
    const ok = await verifyConsistency(small.size, large.size, fromHex(small.root), fromHex(large.root), path);
    if (!ok) fail("consistency", { old: small.size, new: large.size });
    if (checkpoint.size > old.size) keep();
    return old;
  }

  // ------------------------------------------------------------ an entry
  function checkProofShape(proof) {
    if (!hasMembers(proof, PROOF_MEMBERS) || proof.type !== "inclusion") {
      fail("proof-malformed", { why: "not an inclusion proof" });
    }
    if (!isCount(proof.seq) || typeof proof.entry !== "string" ||
        typeof proof.leaf_hash !== "string" || !HEX64.test(proof.leaf_hash)) {
      fail("proof-malformed", { why: "seq, entry or leaf_hash" });
    }
    if (!isObject(proof.checkpoint) || proof.tree_size !== proof.checkpoint.size) {
      fail("proof-malformed", { why: "tree_size is not the checkpoint's size" });
    }
  }

  /** The entry's verified bytes, parsed, or a failure (§3, §8.3). */
  async function checkEntry(seq, proof, checkpoint) {
    if (proof.seq !== seq) fail("proof-other-entry", { got: proof.seq, seq });
    if (!proof.entry.isWellFormed()) fail("entry-not-canonical");
    let entry;
    try {
      entry = parseCanonical(proof.entry);
    } catch (error) {
      fail("entry-not-canonical");
    }
    if (!hasMembers(entry, ENTRY_MEMBERS) || entry.v !== 1 || !isObject(entry.detail)) {
      fail("entry-malformed");
    }
    if (entry.seq !== seq) fail("entry-seq", { got: entry.seq, seq });
    const leaf = await leafHash(utf8(proof.entry));
    if (toHex(leaf) !== proof.leaf_hash) fail("leaf-hash", { seq });
    const path = checkHashes(proof.path);
    const root = path === null ? null : await rootFromInclusion(leaf, seq, checkpoint.size, path);
    if (root === null || toHex(root) !== checkpoint.root) fail("path", { seq, size: checkpoint.size });
    return entry;
  }

  /** An entry that introduces a key must carry that key's record, from the next size on. */
  function checkKeyEntry(chain, entry) {
    if (entry.action !== "ledger.create" && entry.action !== "ledger.key.rotate") return;
    const record = entry.detail.key;
    const key = isObject(record) ? chain.keys.find((k) => k.key_id === record.key_id) : undefined;
    if (key === undefined || canonical(key.record) !== canonical(record) || key.from_size !== entry.seq + 1) {
      fail("key-entry", { seq: entry.seq });
    }
  }

  /** China time (UTC+8, no daylight saving), to the second, as the pages show it. */
  function chinaTime(microseconds) {
    const d = new Date(Math.floor(microseconds / 1e6) * 1000 + 8 * 3600 * 1000);
    const p = (n) => String(n).padStart(2, "0");
    return `${d.getUTCFullYear()}-${p(d.getUTCMonth() + 1)}-${p(d.getUTCDate())} ` +
      `${p(d.getUTCHours())}:${p(d.getUTCMinutes())}:${p(d.getUTCSeconds())}`;
  }

  /** The fields where what the page shows differs from the verified entry. */
  function differences(entry, shown) {
    const verified = {
      seq: String(entry.seq),
      time: chinaTime(entry.time),
      actor: entry.actor,
      action: entry.action,
      object: entry.object,
      outcome: entry.outcome,
    };
    const differ = SHOWN_FIELDS.filter((f) => f !== "detail" && shown[f] !== verified[f]);
    let detail = null;
    try {
      detail = canonical(JSON.parse(shown.detail));
    } catch (error) {
      detail = null;
    }
    if (detail !== canonical(entry.detail)) differ.push("detail");
    return differ;
  }

  /** Verify entry ``seq``: a result {ok, code, params, entry?}. ``shown`` holds what the
      page shows of it (compared with the verified bytes); ``storage`` keeps the trusted
      first key and the witnessed checkpoint (localStorage unless given). */
  async function verify(seq, options) {
    const settings = options || {};
    const store = browserStore(settings.storage || window.localStorage);
    let entry = null;
    try {
      if (!window.crypto || !crypto.subtle) fail("no-crypto");
      const chain = await checkKeyChain(await fetchJSON(`${API}/keys`, "keys"));
      checkTrust(chain, store);
      const proof = await fetchJSON(`${API}/entries/${seq}/proof`, "proof");
      checkProofShape(proof);
      const checkpoint = proof.checkpoint;
      const key = await checkCheckpoint(chain, checkpoint);
      const witnessed = await witness(chain, checkpoint, store);
      entry = await checkEntry(seq, proof, checkpoint);
      checkKeyEntry(chain, entry);
      if (settings.shown) {
        const differ = differences(entry, settings.shown);
        if (differ.length) fail("shown-differs", { fields: differ });
      }
      return {
        ok: true,
        code: "verified",
        params: {
          seq,
          size: checkpoint.size,
          key: short(key.key_id),
          key_id: key.key_id,
          time: chinaTime(checkpoint.time),
          witnessed: witnessed ? witnessed.size : null,
        },
        entry: proof.entry,
      };
    } catch (error) {
      if (!(error instanceof Failure)) {
        return { ok: false, code: "error", params: { why: String(error) }, entry: null };
      }
      const shownEntry = entry === null ? null : canonical(entry);
      return { ok: false, code: error.code, params: error.params, entry: shownEntry };
    }
  }

  // ------------------------------------------------------------ the page
  function messagesOf(root) {
    try {
      return JSON.parse(root.dataset.messages || "{}");
    } catch (error) {
      return {};
    }
  }

  function say(messages, code, params) {
    const template = messages[code] || code;
    return template.replace(/\{(\w+)\}/g, (whole, name) => {
      if (!(name in params)) return whole;
      const value = params[name];
      if (Array.isArray(value)) return value.map((f) => messages["field." + f] || f).join(", ");
      return String(value);
    });
  }

  function shownOf(row) {
    const shown = {};
    for (const field of SHOWN_FIELDS) {
      const cell = row.querySelector(`[data-field="${field}"]`);
      shown[field] = cell ? cell.textContent.trim() : "";
    }
    return shown;
  }

  function showTrust(panel, store, messages) {
    if (!panel) return;
    const trusted = store.trust();
    const key = panel.querySelector("[data-trust-key]");
    const source = panel.querySelector("[data-trust-source]");
    const held = panel.querySelector("[data-trust-witness]");
    key.textContent = trusted && trusted.key_id ? trusted.key_id : messages["trust.none"] || "—";
    source.textContent = trusted && trusted.source ? messages["trust." + trusted.source] || "" : "";
    const witnessed = store.witness();
    held.textContent = witnessed && witnessed.checkpoint
      ? say(messages, "trust.witness", { size: witnessed.checkpoint.size, time: chinaTime(witnessed.checkpoint.time) })
      : messages["trust.none"] || "—";
  }

  function setUpTrust(panel, store, messages) {
    if (!panel) return;
    const form = panel.querySelector("form");
    const input = form.querySelector("input");
    const notice = panel.querySelector("[data-trust-notice]");
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      const value = input.value.trim().toLowerCase();
      if (!HEX64.test(value)) {
        notice.textContent = messages["trust.invalid"] || "trust.invalid";
        notice.className = "verification failed";
        return;
      }
      const trusted = store.trust();
      // Another first key than the one pinned may be another ledger: bind it anew.
      const ledger = trusted && trusted.key_id === value ? trusted.ledger : null;
      store.setTrust({ key_id: value, ledger, source: "entered", at: Date.now() });
      notice.textContent = messages["trust.saved"] || "trust.saved";
      notice.className = "verification verified";
      showTrust(panel, store, messages);
    });
    showTrust(panel, store, messages);
  }

  function showResult(row, result, messages) {
    const box = row.querySelector("[data-result]");
    box.replaceChildren();
    box.className = "verification " + (result.ok ? "verified" : "failed");
    box.dataset.outcome = result.ok ? "verified" : "failed";
    box.dataset.reason = result.code;
    const line = document.createElement("p");
    line.textContent = result.ok
      ? say(messages, "verified", result.params)
      : say(messages, "failed", { reason: say(messages, result.code, result.params) });
    if (result.ok) line.title = result.params.key_id;
    box.append(line);
    if (result.entry) {
      const bytes = document.createElement("details");
      const summary = document.createElement("summary");
      summary.textContent = messages["entry.bytes"] || "entry";
      const text = document.createElement("pre");
      text.className = "verified-entry";
      text.dataset.testid = "verified-entry";
      text.textContent = result.entry;
      bytes.append(summary, text);
      box.append(bytes);
    }
  }

  function setUpPage() {
    const root = document.querySelector("[data-trail]");
    if (!root) return;
    const messages = messagesOf(root);
    const store = browserStore(window.localStorage);
    const panel = document.querySelector("[data-trust]");
    setUpTrust(panel, store, messages);
    let queue = Promise.resolve(); // one verification at a time: they share the witness
    root.addEventListener("click", (event) => {
      const button = event.target.closest("button[data-verify]");
      if (!button) return;
      const row = button.closest("[data-entry]");
      const seq = Number(button.dataset.verify);
      const box = row.querySelector("[data-result]");
      box.className = "verification";
      box.dataset.outcome = "pending";
      delete box.dataset.reason;
      box.textContent = messages.checking || "…";
      button.disabled = true;
      queue = queue.then(async () => {
        const result = await verify(seq, { shown: shownOf(row) });
        showResult(row, result, messages);
        showTrust(panel, store, messages);
        button.disabled = false;
      });
    });
  }

  window.sbxTrail = {
    canonical,
    parseCanonical,
    rootFromInclusion: async (leafHex, index, size, pathHex) => {
      const root = await rootFromInclusion(fromHex(leafHex), index, size, pathHex.map(fromHex));
      return root === null ? null : toHex(root);
    },
    verifyConsistency: (oldSize, newSize, oldRoot, newRoot, pathHex) =>
      verifyConsistency(oldSize, newSize, fromHex(oldRoot), fromHex(newRoot), pathHex.map(fromHex)),
    chinaTime,
    verify,
  };

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", setUpPage);
  } else {
    setUpPage();
  }
})();
