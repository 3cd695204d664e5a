package dev.recycler.core.testing;

import dev.recycler.core.api.RecyclerException;
import dev.recycler.core.slot.WrapperLink;
import dev.recycler.proto.v1.RecyclerMessage;
import java.util.ArrayList;
import java.util.List;

/** Records what the pool sends to one wrapper. */
public final class TestingWrapperLink implements WrapperLink {
  private final String peer;
  private final List<RecyclerMessage> sent = new ArrayList<>();
  private RecyclerException closedWith;

  public TestingWrapperLink(String peer) {
    this.peer = peer;
  }

  @Override
  public synchronized void send(RecyclerMessage message) {
    if (closedWith == null) {
      sent.add(message);
    }
  }

  @Override
  public synchronized void close(RecyclerException reason) {
    if (closedWith == null) {
      closedWith = reason;
    }
  }

  @Override
  public String peer() {
    return peer;
  }

  public synchronized List<RecyclerMessage> sent() {
    return List.copyOf(sent);
  }

  public synchronized List<RecyclerMessage> sent(RecyclerMessage.KindCase kind) {
    return sent.stream().filter(m -> m.getKindCase() == kind).toList();
  }

  public synchronized RecyclerMessage last() {
    return sent.isEmpty() ? null : sent.get(sent.size() - 1);
  }

  public synchronized RecyclerException closedWith() {
    return closedWith;
  }

  public synchronized List<RecyclerMessage> drain() {
    List<RecyclerMessage> copy = new ArrayList<>(sent);
    sent.clear();
    return copy;
  }
}
