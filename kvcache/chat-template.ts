/**
 * The one canonical rendering of a prompt, shared by the router (to hash it) and the simulated engine (to run it):
 * Llama-3's chat template with the assistant generation prompt appended, as vLLM renders a chat request with
 * add_generation_prompt=True, and a BOS before a completion prompt, as vLLM tokenizes one with
 * add_special_tokens. The router hashes exactly what the engine caches, so their prefixes line up.
 */

export const BEGIN_OF_TEXT = '<|begin_of_text|>';
const END_OF_TURN = '<|eot_id|>';

export interface ChatMessageText {
  readonly role: string;
  readonly content: string;
}

function turnHeader(role: string): string {
  return `<|start_header_id|>${role}<|end_header_id|>\n\n`;
}

function renderTurns(messages: readonly ChatMessageText[]): string {
  let text = BEGIN_OF_TEXT;
  for (const m of messages) text += turnHeader(m.role) + m.content + END_OF_TURN;
  return text;
}

/** The whole conversation, ending with the assistant's header: the model's answer is meant to follow directly. */
export function renderChatPrompt(messages: readonly ChatMessageText[]): string {
  return renderTurns(messages) + turnHeader('assistant');
}

/**
 * The text that precedes, in renderChatPrompt's output, a part the template cannot render as text (an image, say):
 * the complete turns before it, then `partial`'s header and its text so far. Everything up to there is a prefix
 * the engine really shares with other requests; nothing after it can be known without the part.
 */
export function renderChatPromptPrefix(complete: readonly ChatMessageText[], partial: ChatMessageText): string {
  return renderTurns(complete) + turnHeader(partial.role) + partial.content;
}

/** A completion request's text prompt as the engine tokenizes it. */
export function renderCompletionPrompt(prompt: string): string {
  return BEGIN_OF_TEXT + prompt;
}
