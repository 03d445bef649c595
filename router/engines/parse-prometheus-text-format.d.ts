// The package ships no types. This declares the part Switchyard uses, as the CommonJS module it is
// (`module.exports = parsePrometheusTextFormat`), so a default import works under esModuleInterop.
declare module 'parse-prometheus-text-format' {
  namespace parsePrometheusTextFormat {
    /** One series. Gauges, counters and untyped series carry `value`; histograms and summaries the rest. */
    interface Sample {
      value?: string;
      labels?: Record<string, string>;
      timestamp_ms?: string;
      buckets?: Record<string, string>;
      quantiles?: Record<string, string>;
      count?: string;
      sum?: string;
    }
    interface MetricFamily {
      name: string;
      help: string;
      /** Upper-cased TYPE: COUNTER, GAUGE, HISTOGRAM, SUMMARY, or UNTYPED when no TYPE line was given. */
      type: string;
      metrics: Sample[];
    }
  }
  /** Throws on a malformed line. */
  function parsePrometheusTextFormat(text: string): parsePrometheusTextFormat.MetricFamily[];
  export = parsePrometheusTextFormat;
}
