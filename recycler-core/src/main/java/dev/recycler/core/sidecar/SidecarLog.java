package dev.recycler.core.sidecar;

import java.io.PrintStream;
import java.io.PrintWriter;
import java.io.StringWriter;
import java.time.Clock;
import java.time.format.DateTimeFormatter;
import java.util.Locale;
import org.slf4j.ILoggerFactory;
import org.slf4j.IMarkerFactory;
import org.slf4j.Marker;
import org.slf4j.event.Level;
import org.slf4j.helpers.BasicMarkerFactory;
import org.slf4j.helpers.LegacyAbstractLogger;
import org.slf4j.helpers.MessageFormatter;
import org.slf4j.helpers.NOPMDCAdapter;
import org.slf4j.spi.MDCAdapter;
import org.slf4j.spi.SLF4JServiceProvider;

/**
 * The standalone sidecar's log output: one record per event on stderr, as text ({@code 2026-12-07T10:00:00.123Z INFO
 * [main] dev.recycler.core.Recycler: message}, a stack trace indented below) or as one JSON object per line ({@code
 * time}, {@code level}, {@code thread}, {@code logger}, {@code message}, {@code error}). {@link #install} selects this
 * class as SLF4J's provider through the {@code slf4j.provider} system property (SLF4J 2.0.9+) and routes
 * java.util.logging (gRPC's own logs) into the same output, so every line of the sidecar has the same form.
 *
 * <p>Only the sidecar's {@code main} installs it; inside a Flink TaskManager the plugin logs through Flink's SLF4J and
 * log4j, and this class is never loaded. There is no {@code META-INF/services} entry on purpose: the plugin jar must
 * not offer a second SLF4J provider.
 *
 * <p>Concurrency: records are formatted per call and written under the stream's lock, one {@code print} and flush per
 * record, so lines of concurrent threads never interleave.
 */
public final class SidecarLog implements SLF4JServiceProvider {
  /** UTC with milliseconds, fixed width. */
  private static final DateTimeFormatter TIME =
      DateTimeFormatter.ofPattern("yyyy-MM-dd'T'HH:mm:ss.SSS'Z'", Locale.ROOT).withZone(java.time.ZoneOffset.UTC);
  private static volatile Sink sink = new Sink(false, Level.INFO, System.err, Clock.systemUTC());

  private final IMarkerFactory markers = new BasicMarkerFactory();
  private final MDCAdapter mdc = new NOPMDCAdapter();
  private ILoggerFactory factory;

  /** Public for SLF4J's explicit provider lookup. */
  public SidecarLog() {}

  /**
   * Makes this the SLF4J provider with {@code format} ({@code text} or {@code json}) and {@code level}. Must run before
   * the first {@code LoggerFactory.getLogger} call of the JVM; later calls only change format and level.
   */
  static void install(String format, String level) {
    sink = new Sink(format.equals("json"), Level.valueOf(level.toUpperCase(Locale.ROOT)), System.err,
        Clock.systemUTC());
    System.setProperty("slf4j.provider", SidecarLog.class.getName());
    // SLF4J announces an explicitly chosen provider at INFO on stderr; that line would break the JSON format.
    System.setProperty("slf4j.internal.verbosity", "WARN");
    java.util.logging.Logger root = java.util.logging.Logger.getLogger("");
    for (java.util.logging.Handler h : root.getHandlers()) {
      root.removeHandler(h);
    }
    root.addHandler(new JulBridge());
    root.setLevel(julLevel(sink.level));
  }

  /** For tests: where records go, in which form, with which clock. */
  static void configure(boolean json, Level level, PrintStream out, Clock clock) {
    sink = new Sink(json, level, out, clock);
  }

  /** Formats one record (no trailing newline for JSON; text may span lines for a stack trace). */
  static String format(boolean json, String time, Level level, String thread, String logger, String message,
      Throwable error) {
    if (json) {
      StringBuilder b = new StringBuilder("{\"time\":\"").append(time).append("\",\"level\":\"").append(level)
          .append("\",\"thread\":");
      quote(b, thread).append(",\"logger\":");
      quote(b, logger).append(",\"message\":");
      quote(b, message);
      if (error != null) {
        b.append(",\"error\":");
        quote(b, stackTrace(error));
      }
      return b.append('}').toString();
    }
    StringBuilder b = new StringBuilder(time).append(' ').append(level).append(" [").append(thread).append("] ")
        .append(logger).append(": ").append(message);
    if (error != null) {
      for (String line : stackTrace(error).split("\n")) {
        b.append("\n    ").append(line.stripTrailing());
      }
    }
    return b.toString();
  }

  private static String stackTrace(Throwable t) {
    StringWriter w = new StringWriter();
    t.printStackTrace(new PrintWriter(w));
    return w.toString().stripTrailing().replace("\r\n", "\n").replace("\t", "    ");
  }

  private static StringBuilder quote(StringBuilder b, String s) {
    b.append('"');
    for (int i = 0; i < s.length(); i++) {
      char c = s.charAt(i);
      switch (c) {
        case '"' -> b.append("\\\"");
        case '\\' -> b.append("\\\\");
        case '\n' -> b.append("\\n");
        case '\r' -> b.append("\\r");
        case '\t' -> b.append("\\t");
        default -> {
          if (c < 0x20) {
            b.append(String.format(Locale.ROOT, "\\u%04x", (int) c));
          } else {
            b.append(c);
          }
        }
      }
    }
    return b.append('"');
  }

  private static java.util.logging.Level julLevel(Level level) {
    return switch (level) {
      case ERROR -> java.util.logging.Level.SEVERE;
      case WARN -> java.util.logging.Level.WARNING;
      case INFO -> java.util.logging.Level.INFO;
      case DEBUG -> java.util.logging.Level.FINE;
      case TRACE -> java.util.logging.Level.FINEST;
    };
  }

  @Override
  public ILoggerFactory getLoggerFactory() {
    return factory;
  }

  @Override
  public IMarkerFactory getMarkerFactory() {
    return markers;
  }

  @Override
  public MDCAdapter getMDCAdapter() {
    return mdc;
  }

  @Override
  public String getRequestedApiVersion() {
    return "2.0.99";
  }

  @Override
  public void initialize() {
    factory = SidecarLogger::new;
  }

  /** Where and how records are written; replaced as a whole. */
  private record Sink(boolean json, Level level, PrintStream out, Clock clock) {
    boolean enabled(Level l) {
      return l.toInt() >= level.toInt();
    }

    void write(Level l, String logger, String message, Throwable error) {
      String record = format(json, TIME.format(clock.instant()), l, Thread.currentThread().getName(), logger,
          message, error);
      synchronized (out) {
        out.println(record);
        out.flush();
      }
    }
  }

  /** An SLF4J logger writing to the current {@link Sink}. */
  static final class SidecarLogger extends LegacyAbstractLogger {
    private static final long serialVersionUID = 1L;

    SidecarLogger(String name) {
      this.name = name;
    }

    @Override
    public boolean isTraceEnabled() {
      return sink.enabled(Level.TRACE);
    }

    @Override
    public boolean isDebugEnabled() {
      return sink.enabled(Level.DEBUG);
    }

    @Override
    public boolean isInfoEnabled() {
      return sink.enabled(Level.INFO);
    }

    @Override
    public boolean isWarnEnabled() {
      return sink.enabled(Level.WARN);
    }

    @Override
    public boolean isErrorEnabled() {
      return sink.enabled(Level.ERROR);
    }

    @Override
    protected String getFullyQualifiedCallerName() {
      return null;
    }

    @Override
    protected void handleNormalizedLoggingCall(Level level, Marker marker, String pattern, Object[] arguments,
        Throwable error) {
      sink.write(level, name, MessageFormatter.basicArrayFormat(pattern, arguments), error);
    }
  }

  /** java.util.logging records (gRPC, Netty) in the same form. */
  private static final class JulBridge extends java.util.logging.Handler {
    @Override
    public void publish(java.util.logging.LogRecord r) {
      int v = r.getLevel().intValue();
      Level level = v >= java.util.logging.Level.SEVERE.intValue() ? Level.ERROR
          : v >= java.util.logging.Level.WARNING.intValue() ? Level.WARN
          : v >= java.util.logging.Level.INFO.intValue() ? Level.INFO
          : v >= java.util.logging.Level.FINE.intValue() ? Level.DEBUG : Level.TRACE;
      Sink s = sink;
      if (!s.enabled(level)) {
        return;
      }
      String message = r.getMessage();
      if (message != null && r.getParameters() != null && r.getParameters().length > 0) {
        try {
          message = java.text.MessageFormat.format(message, r.getParameters());
        } catch (IllegalArgumentException e) {
          // keep the pattern as it is
        }
      }
      s.write(level, r.getLoggerName() == null ? "jul" : r.getLoggerName(), message == null ? "" : message,
          r.getThrown());
    }

    @Override
    public void flush() {}

    @Override
    public void close() {}
  }
}
