package dev.recycler.flink;

import java.util.Collection;
import java.util.Collections;
import java.util.LinkedHashMap;
import java.util.Map;
import java.util.Optional;
import org.apache.flink.api.common.externalresource.ExternalResourceInfo;

/**
 * What operators see through {@code RuntimeContext#getExternalResourceInfos(<name>)}: one entry per TaskManager with
 * string properties. Immutable.
 *
 * <ul>
 *   <li>{@value #ENDPOINT}: {@code host:port} of the recycler, what a Beam pipeline passes as
 *       {@code --environment_config};
 *   <li>{@value #HOST}, {@value #PORT}: the same, split;
 *   <li>{@value #SLOTS}: the number of slots; {@value #SLOT_IDS}: their ids, comma separated;
 *   <li>{@value #ADMIN_ENDPOINT}: {@code host:port} of the admin HTTP endpoint, only when it is enabled.
 * </ul>
 */
final class RecyclerResourceInfo implements ExternalResourceInfo {
  static final String ENDPOINT = "endpoint";
  static final String HOST = "host";
  static final String PORT = "port";
  static final String SLOTS = "slots";
  static final String SLOT_IDS = "slot-ids";
  static final String ADMIN_ENDPOINT = "admin-endpoint";

  private final Map<String, String> properties;

  RecyclerResourceInfo(Map<String, String> properties) {
    this.properties = Collections.unmodifiableMap(new LinkedHashMap<>(properties));
  }

  @Override
  public Optional<String> getProperty(String key) {
    return Optional.ofNullable(properties.get(key));
  }

  @Override
  public Collection<String> getKeys() {
    return properties.keySet();
  }

  @Override
  public boolean equals(Object o) {
    return o instanceof RecyclerResourceInfo other && properties.equals(other.properties);
  }

  @Override
  public int hashCode() {
    return properties.hashCode();
  }

  @Override
  public String toString() {
    return "RecyclerResourceInfo" + properties;
  }
}
