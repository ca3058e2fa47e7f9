#include <gtest/gtest.h>

#include "test_util.h"

TEST(Cli, VersionPrints) {
  auto r = dsv3::testing::RunDsv3({"--version"});
  EXPECT_EQ(r.exit_code, 0);
  EXPECT_NE(r.out.find("dsv3"), std::string::npos);
}
