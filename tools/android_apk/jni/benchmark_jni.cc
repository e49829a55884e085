// JNI entry of the kerasnets benchmark APK: splits the argument string into argv and runs
// TFLite's benchmark (BenchmarkTfLiteModel), which logs its figures to logcat under tag "tflite".
#include <android/log.h>
#include <jni.h>

#include <sstream>
#include <string>
#include <vector>

#include "tensorflow/lite/tools/benchmark/benchmark_tflite_model.h"

extern "C" JNIEXPORT void JNICALL
Java_com_kerasnets_benchmark_BenchmarkActivity_nativeRun(JNIEnv* env, jclass, jstring args) {
  std::vector<std::string> tokens{"kerasnets_benchmark"};
  const char* chars = env->GetStringUTFChars(args, nullptr);
  std::istringstream stream(chars);
  for (std::string token; stream >> token;) tokens.push_back(token);
  env->ReleaseStringUTFChars(args, chars);

  std::vector<char*> argv;
  for (std::string& token : tokens) argv.push_back(token.data());
  tflite::benchmark::BenchmarkTfLiteModel benchmark;
  if (benchmark.Run(static_cast<int>(argv.size()), argv.data()) != kTfLiteOk) {
    // The runner waits for either the timings line or this one.
    __android_log_print(ANDROID_LOG_ERROR, "tflite", "Benchmarking failed.");
  }
}
