// Runs TFLite's benchmark from an activity: the app's scheduling class is the one a deployed
// classifier gets, unlike a binary started from `adb shell`.
package com.kerasnets.benchmark;

import android.app.Activity;
import android.os.Bundle;
import android.util.Log;
import java.io.File;
import java.io.FileNotFoundException;
import java.io.FileOutputStream;
import java.io.IOException;
import java.io.InputStream;
import java.io.OutputStream;
import java.util.Arrays;

/**
 * Start with {@code am start -S -n com.kerasnets.benchmark/.BenchmarkActivity --es args
 * '--graph=asset:NAME.tflite --num_threads=4'}. {@code asset:NAME} names a model packaged in the
 * APK; any other {@code --graph} is a file path on the device. Output goes to logcat, tag "tflite".
 */
public class BenchmarkActivity extends Activity {
  // The tag TFLite's benchmark logs under, so one `logcat -s tflite` shows everything.
  private static final String TAG = "tflite";
  private static final String PACKAGED_GRAPH = "--graph=asset:";
  private static final String MODELS = "models";

  static {
    System.loadLibrary("kerasnets_benchmark");
  }

  private static native void nativeRun(String args);

  @Override
  public void onCreate(Bundle savedInstanceState) {
    super.onCreate(savedInstanceState);
    Bundle extras = getIntent().getExtras();
    String args = extras == null ? null : extras.getString("args");
    if (args == null) {
      Log.e(TAG, "ERROR: no benchmark arguments: start the activity with --es args "
          + "'--graph=asset:NAME.tflite --num_threads=4'");
    } else {
      try {
        args = resolvePackagedGraph(args);
        Log.i(TAG, "Running the kerasnets benchmark with args: " + args);
        nativeRun(args);
      } catch (IOException e) {
        Log.e(TAG, "ERROR: " + e.getMessage());
        Log.e(TAG, "Benchmarking failed.");
      }
    }
    finish();
  }

  /** The benchmark reads a file path, so a packaged model is copied to the app's files first. */
  private String resolvePackagedGraph(String args) throws IOException {
    StringBuilder resolved = new StringBuilder();
    for (String arg : args.trim().split("\\s+")) {
      if (arg.startsWith(PACKAGED_GRAPH)) {
        arg = "--graph=" + extractModel(arg.substring(PACKAGED_GRAPH.length())).getAbsolutePath();
      }
      resolved.append(arg).append(' ');
    }
    return resolved.toString().trim();
  }

  private File extractModel(String name) throws IOException {
    File target = new File(getFilesDir(), name);
    try (InputStream in = getAssets().open(MODELS + "/" + name);
        OutputStream out = new FileOutputStream(target)) {
      byte[] buffer = new byte[1 << 16];
      for (int n = in.read(buffer); n > 0; n = in.read(buffer)) {
        out.write(buffer, 0, n);
      }
    } catch (FileNotFoundException e) {
      throw new IOException("model " + name + " is not packaged in this APK; it holds "
          + Arrays.toString(getAssets().list(MODELS)) + " (stage it with kerasnets bench "
          + "--stage_apk and rebuild, or push it and pass --graph=/data/local/tmp/" + name + ")");
    }
    return target;
  }
}
