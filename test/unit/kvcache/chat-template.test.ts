import { describe, expect, it } from 'vitest';
import { renderChatPrompt, renderChatPromptPrefix, renderCompletionPrompt } from '../../../kvcache/chat-template.js';

describe('chat template', () => {
  it('renders every message with its role, ending with the assistant generation prompt', () => {
    const text = renderChatPrompt([
      { role: 'system', content: 'Be terse.' },
      { role: 'user', content: 'Hi' },
    ]);
    expect(text).toBe(
      '<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nBe terse.<|eot_id|>' +
        '<|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n',
    );
  });

  it('renders a prefix that the full prompt starts with, up to a part it cannot render', () => {
    const complete = [{ role: 'system', content: 'Be terse.' }];
    const prefix = renderChatPromptPrefix(complete, { role: 'user', content: 'Look at this: ' });
    expect(prefix).toBe('<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nBe terse.<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nLook at this: ');
    expect(renderChatPrompt([...complete, { role: 'user', content: 'Look at this: and that' }]).startsWith(prefix)).toBe(true);
  });

  it('puts a BOS before a completion prompt', () => {
    expect(renderCompletionPrompt('Once upon')).toBe('<|begin_of_text|>Once upon');
  });
});
