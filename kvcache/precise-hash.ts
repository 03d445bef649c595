/**
 * vLLM's own prefix-cache block hashes ("precise" mode): computing them over the same token ids as the engine
 * gives the very hashes its KV events carry, so events and router lookups meet in one index.
 *
 * The recipe, from vLLM's source (vllm/v1/core/kv_cache_utils.py and vllm/utils/hashing.py):
 *
 *   digest(block i) = SHA-256( canonicalCBOR( [parent, tokens_i, extra_keys_i] ) )        hash_block_tokens
 *
 *   parent      the 32-byte digest of block i-1; for block 0, NONE_HASH = SHA-256(canonicalCBOR(seed)) where seed
 *               is the engine's PYTHONHASHSEED string (init_none_hash; without PYTHONHASHSEED vLLM draws 32 random
 *               bytes and no router can reproduce its hashes, so precise mode needs the seed set on the engines)
 *   tokens_i    the block's token ids as a tuple: a CBOR array of unsigned ints; only full blocks are hashed
 *               (get_request_block_hasher), a trailing partial block has no hash
 *   extra_keys  None (CBOR null) when the request has none, else a tuple (generate_block_hash_extra_keys) of, in
 *               order: the LoRA adapter's name on every block (_gen_lora_extra_hash_keys, lora_request.lora_name),
 *               multimodal (identifier, offset) pairs, the cache_salt on block 0 only, prompt-embedding digests
 *   CBOR        cbor2.dumps(obj, canonical=True) (sha256_cbor): shortest-form heads, definite lengths; a tuple
 *               is an array, bytes a byte string, str a UTF-8 text string, None is 0xf6
 *
 * The engine is vLLM started with `--prefix-caching-hash-algo sha256_cbor` (its default "sha256" pickles the tuple
 * and cannot be reproduced outside Python) and, for int hashes in events, VLLM_KV_EVENTS_USE_INT_BLOCK_HASHES=1.
 * The index keeps 64 bits: the low 64 bits of the digest read as a big-endian integer, i.e. its last 8 bytes.
 * That is vLLM's maybe_convert_block_hash (int.from_bytes(digest, "big") & (2**64 - 1)) and llm-d's
 * kv-cache (binary.BigEndian.Uint64(digest[24:]) in its SHA256-CBOR token processor), and it is also what
 * kvcache/events keeps of a 32-byte hash that arrives as bytes, so both event forms land on the same BlockHash.
 *
 * Multimodal and prompt-embedding extra keys are not supported: the router hashes text prompts.
 *
 * The CBOR here is written by hand for the only shapes the recipe needs, into one reused buffer: a general CBOR
 * library costs several microseconds per block, and a 128K-token prompt has 8,000 blocks. The unit tests check it
 * against the cborg library and against digests computed with vLLM's Python recipe.
 */

import { createHash } from 'node:crypto';
import type { BlockHash } from './types.js';

/** vLLM's default block size on GPUs. */
export const VLLM_DEFAULT_BLOCK_SIZE = 16;

/**
 * The PYTHONHASHSEED assumed when none is given. vLLM itself has no fixed default (unset means random); '0' is the
 * usual setting, and the simulated engine behaves as a vLLM started with it.
 */
export const DEFAULT_NONE_HASH_SEED = '0';

export interface VllmHashOptions {
  /** Tokens per block, the engine's --block-size. Default 16. */
  readonly blockSize?: number;
  /** The engines' PYTHONHASHSEED. Default '0'. */
  readonly noneHashSeed?: string;
  /** The LoRA adapter's name (lora_name in vLLM's LoRARequest); undefined for the base model. */
  readonly loraName?: string;
  /** The request's cache_salt; it keys the first block only, and through the chain all the others. */
  readonly cacheSalt?: string;
}

const CBOR_UINT = 0;
const CBOR_BYTES = 2;
const CBOR_TEXT = 3;
const CBOR_ARRAY = 4;
const CBOR_NULL = 0xf6;
const DIGEST_BYTES = 32;
// The longest head: the initial byte and an 8-byte argument.
const MAX_HEAD_BYTES = 9;
const TWO_POW_32 = 2 ** 32;

/**
 * vLLM's block hashes of `tokenIds` (one per full block, low 64 bits each). Throws RangeError on a token id that
 * is not a non-negative safe integer or a block size that is not a positive integer.
 */
export function vllmBlockHashes(tokenIds: ArrayLike<number>, opts: VllmHashOptions = {}): BlockHash[] {
  const blockSize = opts.blockSize ?? VLLM_DEFAULT_BLOCK_SIZE;
  if (!(Number.isInteger(blockSize) && blockSize >= 1)) throw new RangeError(`blockSize must be a positive integer, got ${blockSize}`);
  const count = Math.floor(tokenIds.length / blockSize);
  const hashes: BlockHash[] = new Array(count);
  if (count === 0) return hashes;

  const lora = opts.loraName === undefined ? undefined : cborText(opts.loraName);
  const salt = opts.cacheSalt === undefined || opts.cacheSalt === '' ? undefined : cborText(opts.cacheSalt);
  const firstExtras = extraKeys(lora, salt);
  const laterExtras = extraKeys(lora, undefined);

  const capacity = 1 + MAX_HEAD_BYTES + DIGEST_BYTES + MAX_HEAD_BYTES * (blockSize + 1) + Math.max(firstExtras.length, laterExtras.length);
  const buf = Buffer.allocUnsafe(capacity);
  let parent = noneHash(opts.noneHashSeed ?? DEFAULT_NONE_HASH_SEED);
  for (let b = 0; b < count; b++) {
    let at = writeHead(buf, 0, CBOR_ARRAY, 3);
    at = writeHead(buf, at, CBOR_BYTES, DIGEST_BYTES);
    at += parent.copy(buf, at);
    at = writeHead(buf, at, CBOR_ARRAY, blockSize);
    for (let i = b * blockSize, end = i + blockSize; i < end; i++) at = writeUint(buf, at, tokenIds[i]!);
    at += (b === 0 ? firstExtras : laterExtras).copy(buf, at);
    parent = createHash('sha256').update(buf.subarray(0, at)).digest();
    hashes[b] = parent.readBigUInt64BE(DIGEST_BYTES - 8);
  }
  return hashes;
}

const noneHashes = new Map<string, Buffer>();

/** NONE_HASH for a seed: SHA-256 of the seed string's canonical CBOR (init_none_hash with PYTHONHASHSEED set). */
function noneHash(seed: string): Buffer {
  let digest = noneHashes.get(seed);
  if (digest === undefined) {
    digest = createHash('sha256').update(cborText(seed)).digest();
    noneHashes.set(seed, digest);
  }
  return digest;
}

/** The encoded extra_keys element: null, or the tuple (lora name?, cache salt?). */
function extraKeys(lora: Buffer | undefined, salt: Buffer | undefined): Buffer {
  const keys = [lora, salt].filter((key): key is Buffer => key !== undefined);
  if (keys.length === 0) return Buffer.from([CBOR_NULL]);
  return Buffer.concat([cborHead(CBOR_ARRAY, keys.length), ...keys]);
}

function cborText(text: string): Buffer {
  const utf8 = Buffer.from(text, 'utf8');
  return Buffer.concat([cborHead(CBOR_TEXT, utf8.length), utf8]);
}

function cborHead(major: number, value: number): Buffer {
  const head = Buffer.alloc(MAX_HEAD_BYTES);
  return head.subarray(0, writeHead(head, 0, major, value));
}

function writeUint(buf: Buffer, at: number, value: number): number {
  if (!(Number.isSafeInteger(value) && value >= 0)) throw new RangeError(`token id must be a non-negative integer, got ${value}`);
  return writeHead(buf, at, CBOR_UINT, value);
}

/** A CBOR head in its shortest form (RFC 8949 §4.2.1, what canonical=True produces). Returns the next offset. */
function writeHead(buf: Buffer, at: number, major: number, value: number): number {
  const type = major << 5;
  if (value < 24) {
    buf[at] = type | value;
    return at + 1;
  }
  if (value < 0x100) {
    buf[at] = type | 24;
    buf[at + 1] = value;
    return at + 2;
  }
  if (value < 0x10000) {
    buf[at] = type | 25;
    buf.writeUInt16BE(value, at + 1);
    return at + 3;
  }
  if (value < TWO_POW_32) {
    buf[at] = type | 26;
    buf.writeUInt32BE(value, at + 1);
    return at + 5;
  }
  buf[at] = type | 27;
  buf.writeUInt32BE(Math.floor(value / TWO_POW_32), at + 1);
  buf.writeUInt32BE(value >>> 0, at + 5);
  return at + 9;
}
