/**
 * Progress on stderr while a replay runs: a bar redrawn in place on a terminal, and a plain line every tenth of
 * the way otherwise (CI logs, pipes), so a log stays readable.
 */
export function progressReporter(stream: NodeJS.WriteStream = process.stderr): {
  update: (label: string, done: number, total: number) => void;
  end: () => void;
} {
  const tty = stream.isTTY === true;
  let lastLabel = '';
  let lastDrawn = -1;
  let drawnAt = 0;
  return {
    update(label, done, total) {
      const fraction = total === 0 ? 1 : done / total;
      if (tty) {
        // Redrawing costs a write; ten times a second is smooth enough and keeps it off the profile.
        const now = Date.now();
        if (label === lastLabel && done !== total && now - drawnAt < 100) return;
        drawnAt = now;
        if (label !== lastLabel && lastLabel !== '') stream.write('\n');
        lastLabel = label;
        const width = 30;
        const filled = Math.round(fraction * width);
        stream.write(`\r${label.padEnd(20)} [${'#'.repeat(filled)}${'.'.repeat(width - filled)}] ${(100 * fraction).toFixed(0).padStart(3)}% ${done}/${total}`);
        return;
      }
      const tenth = Math.floor(fraction * 10);
      if (label === lastLabel && tenth === lastDrawn) return;
      lastLabel = label;
      lastDrawn = tenth;
      stream.write(`${label}: ${done}/${total} requests finished\n`);
    },
    end() {
      if (tty && lastLabel !== '') stream.write('\n');
    },
  };
}
