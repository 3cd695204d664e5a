package dev.recycler.core.auth;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import dev.recycler.core.api.RecyclerException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.security.SecureRandom;
import java.util.HashSet;
import java.util.Set;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.api.io.TempDir;

@Timeout(value = 10, unit = TimeUnit.SECONDS)
class LeaseCredentialsTest {
  @Test
  void mintedCredentialsAre128RandomBitsInHex() {
    SecureRandom random = new SecureRandom();
    Set<String> seen = new HashSet<>();
    for (int i = 0; i < 1000; i++) {
      String c = LeaseCredentials.mint(random);
      assertThat(c).matches("[0-9a-f]{32}");
      seen.add(c);
    }
    assertThat(seen).hasSize(1000);
  }

  @Test
  void splitSeparatesThePublicIdFromTheCredential() {
    String cred = "0123456789abcdef0123456789abcdef";
    String id = LeaseCredentials.workerId("slot.a-0.g12", cred);

    assertThat(id).isEqualTo("slot.a-0.g12." + cred);
    assertThat(LeaseCredentials.split(id).publicId()).isEqualTo("slot.a-0.g12");
    assertThat(LeaseCredentials.split(id).credential()).isEqualTo(cred);
    assertThat(LeaseCredentials.split(id)).hasToString("slot.a-0.g12.<credential>");
    assertThat(LeaseCredentials.redact(id)).isEqualTo("slot.a-0.g12");
    // Without a well-formed credential the whole id is the public id and the credential is absent.
    assertThat(LeaseCredentials.split("slot-0.g12").credential()).isEmpty();
    assertThat(LeaseCredentials.split("slot-0.g12." + cred.toUpperCase()).credential()).isEmpty();
    assertThat(LeaseCredentials.split(null).publicId()).isEmpty();
  }

  @Test
  void describeEchoesOnlyPublicIds() {
    assertThat(LeaseCredentials.describe("slot-0.g7")).isEqualTo("'slot-0.g7'");
    String malformed = "slot-0.g7.0123456789ABCDEF0123456789ABCDEF";
    assertThat(LeaseCredentials.describe(malformed)).isEqualTo("of " + malformed.length() + " characters");
  }

  @Test
  void matchesIsExactAndNeverTrueForEmpty() {
    assertThat(LeaseCredentials.matches("abc", "abc")).isTrue();
    assertThat(LeaseCredentials.matches("abc", "abd")).isFalse();
    assertThat(LeaseCredentials.matches("abc", "abcd")).isFalse();
    assertThat(LeaseCredentials.matches("", "")).isFalse();
    assertThat(LeaseCredentials.matches("abc", null)).isFalse();
  }

  @Test
  void attachSecretIsReadTrimmedAndCheckedWithoutEchoingIt(@TempDir Path dir) throws Exception {
    AttachSecret secret = AttachSecret.read(Files.writeString(dir.resolve("s"), "  0123456789abcdef-secret\n"));

    secret.check("0123456789abcdef-secret");
    assertThatThrownBy(() -> secret.check(null)).isInstanceOfSatisfying(RecyclerException.class,
        e -> assertThat(e.kind()).isEqualTo(RecyclerException.Kind.UNAUTHENTICATED));
    assertThatThrownBy(() -> secret.check("0123456789abcdef-secreT")).isInstanceOfSatisfying(RecyclerException.class,
        e -> assertThat(e.kind()).isEqualTo(RecyclerException.Kind.FORBIDDEN))
        .hasMessageNotContaining("0123456789abcdef");
    assertThatThrownBy(() -> AttachSecret.read(Files.writeString(dir.resolve("spaces"), "a secret with spaces in it")))
        .hasMessageContaining("without spaces").hasMessageNotContaining("a secret with");
  }
}
