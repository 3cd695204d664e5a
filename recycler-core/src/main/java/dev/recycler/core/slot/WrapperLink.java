package dev.recycler.core.slot;

import dev.recycler.core.api.RecyclerException;
import dev.recycler.proto.v1.RecyclerMessage;

/** The recycler's end of one wrapper's Attach stream. Implementations are thread-safe. */
public interface WrapperLink {
  /** Sends a message; silently dropped once the link is closed. Never throws. */
  void send(RecyclerMessage message);

  /** Ends the stream with the status of {@code reason}. Idempotent. */
  void close(RecyclerException reason);

  /** The wrapper's address, for logs and error messages. */
  String peer();
}
