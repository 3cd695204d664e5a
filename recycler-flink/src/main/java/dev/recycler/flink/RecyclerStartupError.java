package dev.recycler.flink;

/**
 * Thrown out of the driver when the recycler cannot start and the TaskManager is configured to fail rather than run
 * without it.
 *
 * <p>Why an {@link Error}: Flink's {@code ExternalResourceUtils} catches every {@link Exception} from a driver, logs a
 * WARN and starts the TaskManager without the resource. An {@code Error} passes through {@code TaskManagerRunner}, whose
 * outermost handler logs "Terminating TaskManagerRunner with exit code 1" with this error and exits the process; its
 * shutdown hook closes the services started so far. Only this plugin throws it, only during TaskManager start.
 */
public final class RecyclerStartupError extends Error {
  private static final long serialVersionUID = 1L;

  RecyclerStartupError(String message, Throwable cause) {
    super(message, cause);
  }
}
