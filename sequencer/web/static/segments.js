// SMS segments as Twilio counts them: the rule of plugins/sms/sequencer_sms/segments.py, ported so the
// count follows the rep's typing without a request per key (tests/test_browser.py checks both agree).
// GSM-7 (3GPP TS 23.038): 160 septets in one segment, 153 once split, the extension table's characters
// counting two and never split; any other character makes the text UCS-2: 70 UTF-16 units, 67 once
// split, a character outside the BMP counting two units whose pair is never split.
(function (root) {
  "use strict";
  var GSM7_BASIC = "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?" +
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà";
  var GSM7_EXTENSION = "\f^{}\\[~]|€";

  function pack(encoding, sizes, single, part) {
    var units = sizes.reduce(function (a, b) { return a + b; }, 0);
    if (units <= single) {
      return { encoding: encoding, units: units, count: units ? 1 : 0 };
    }
    var count = 1, used = 0;
    sizes.forEach(function (size) {
      if (used + size > part) { count += 1; used = 0; }
      used += size;
    });
    return { encoding: encoding, units: units, count: count };
  }

  function count(text) {
    var chars = Array.from(text);  // code points, as Python iterates a str
    var gsm = chars.every(function (ch) { return GSM7_BASIC.indexOf(ch) >= 0 || GSM7_EXTENSION.indexOf(ch) >= 0; });
    if (gsm) {
      return pack("GSM-7", chars.map(function (ch) { return GSM7_EXTENSION.indexOf(ch) >= 0 ? 2 : 1; }), 160, 153);
    }
    return pack("UCS-2", chars.map(function (ch) { return ch.codePointAt(0) > 0xFFFF ? 2 : 1; }), 70, 67);
  }

  root.smsSegments = count;
})(window);
