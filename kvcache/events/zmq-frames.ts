/**
 * vLLM's ZMQ message for one KVEventBatch (ZmqEventPublisher): three frames, the topic (UTF-8, may be empty), the
 * batch's sequence number as 8 bytes big-endian (0, 1, 2, ... from the publisher's start), and the msgpack
 * payload. SUB sockets filter on the topic frame by prefix.
 */

import { KvEventDecodeError } from './codec.js';

const SEQUENCE_BYTES = 8;

export interface KvEventMessage {
  readonly topic: string;
  readonly seq: bigint;
  readonly payload: Uint8Array;
}

export function kvEventFrames(topic: string, seq: bigint, payload: Uint8Array): [Buffer, Buffer, Uint8Array] {
  const seqBytes = Buffer.alloc(SEQUENCE_BYTES);
  seqBytes.writeBigUInt64BE(seq);
  return [Buffer.from(topic, 'utf8'), seqBytes, payload];
}

export function parseKvEventFrames(frames: readonly Buffer[]): KvEventMessage {
  if (frames.length !== 3) throw new KvEventDecodeError(`expected 3 frames (topic, sequence, payload), got ${frames.length}`);
  const [topic, seq, payload] = frames as [Buffer, Buffer, Buffer];
  if (seq.length !== SEQUENCE_BYTES) throw new KvEventDecodeError(`sequence frame must be ${SEQUENCE_BYTES} bytes, got ${seq.length}`);
  return { topic: topic.toString('utf8'), seq: seq.readBigUInt64BE(), payload };
}
